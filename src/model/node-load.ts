/** Opening models from Node file-system paths: a Hugging Face directory or a .gguf file. */
import { HipAttnError } from '../errors.js';
import { type OpenedModel, openGgufFile, openHfModel } from './load.js';
import { fileSource, isDirectory, nodeDirectory } from './node-files.js';

/** Opens a model directory (config.json + safetensors) or a GGUF file by path. */
export async function openModelPath(path: string): Promise<OpenedModel> {
  if (await isDirectory(path)) return openHfModel(nodeDirectory(path));
  const source = await fileSource(path);
  const magic = source.size >= 4 ? await source.read(0, 4) : new Uint8Array(0);
  if (new TextDecoder().decode(magic) === 'GGUF') return openGgufFile(source);
  await source.close();
  throw new HipAttnError('MODEL_FORMAT', `${path}: neither a model directory nor a GGUF file`);
}
