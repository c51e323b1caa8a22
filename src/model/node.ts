/** Node-only parts of the model layer: file sources and opening models by path. */
export { fileSource, isDirectory, nodeDirectory } from './node-files.js';
export { openModelPath } from './node-load.js';
