/** Locating files that ship with the package (the embedded default model), from dist/ or src/. */
export { packageRoot, packageVersion, embeddedModelPath as defaultModelPath } from '../runtime/embedded.js';
