// Vite config for the hakiri web UI.
//
// `npm run build` writes dist/ (index.html + assets/): the control plane embeds and serves
// it, answering index.html for every unknown path (the app routes with the History API).
// `vite preview` / `vite` proxy /api, /auth and /sync to a control plane at
// HAKIRI_CONTROL_URL (default http://127.0.0.1:7600), so the app is same-origin with it,
// exactly as when the control plane serves it itself.
import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

const control = process.env.HAKIRI_CONTROL_URL ?? "http://127.0.0.1:7600";
const proxy = {
  "/api": { target: control, changeOrigin: false },
  "/auth": { target: control, changeOrigin: false },
  "/healthz": { target: control, changeOrigin: false },
  "/sync": { target: control.replace(/^http/, "ws"), ws: true, changeOrigin: false },
};

export default defineConfig({
  resolve: {
    alias: [
      // loro-crdt's default browser entry loads its 3.6 MB WASM with a synchronous XHR and
      // compiles it on the main thread. Every `import "loro-crdt"` (ours and loro-adaptors')
      // goes to a shim that initialises the `web` build asynchronously instead (streaming
      // compile), once.
      { find: /^loro-crdt$/, replacement: fileURLToPath(new URL("./src/loro.ts", import.meta.url)) },
    ],
  },
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  optimizeDeps: { exclude: ["loro-crdt", "loro-adaptors", "loro-websocket"] },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 1000,
  },
  server: { host: "127.0.0.1", proxy },
  preview: { host: "127.0.0.1", proxy },
});
