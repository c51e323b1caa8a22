/** Browser entry that fails, to test that page errors reach the test. */
export default async function run(): Promise<never> {
  console.log('about to throw');
  throw new Error('deliberate failure in the page');
}
