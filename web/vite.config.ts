/**
 * The browser app (web/): `npm run build:web` builds it into web/dist, a static folder that
 * `hipattn serve --ui` (or any static file server) serves. It imports the library from ../src,
 * so the browser and Node share every module but device acquisition and file access.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  // Relative asset URLs: the app works at / and under any sub-path.
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 4096,
    reportCompressedSize: false,
  },
  worker: { format: 'es' },
  // `vite web` (dev server) imports ../src.
  server: { fs: { allow: [fileURLToPath(new URL('..', import.meta.url))] } },
  clearScreen: false,
});
