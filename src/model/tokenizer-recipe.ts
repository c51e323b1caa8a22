/** Builds a tokenizer from its recipe (`TextTokenizer.recipe`): the same tokenizer, e.g. in a worker thread. */
import { GgufBpeTokenizer } from './gguf-tokenizer.js';
import { SpmTokenizer } from './spm-tokenizer.js';
import { HfTokenizer, type TextTokenizer, type TokenizerRecipe } from './tokenizer.js';

export function buildTokenizer(recipe: TokenizerRecipe): TextTokenizer {
  if (recipe.kind === 'spm') return new SpmTokenizer(recipe.vocab);
  return recipe.addBosDefault === undefined ? new HfTokenizer(recipe.init) : new GgufBpeTokenizer(recipe.init, recipe.addBosDefault);
}
