// Every `import "loro-crdt"` in the app and in loro-adaptors resolves here (vite.config.ts):
// the `web` build of loro-crdt, initialised once with a streaming WASM compile. Importers
// wait for the top-level await, so nothing touches Loro before its WASM is ready. The
// modules that import this are loaded lazily (pages that edit the document), so the other
// pages never download the WASM.
// (The index re-exports the default init at run time; its types name it in loro_wasm.)
import init from "loro-crdt/web/loro_wasm.js";
import wasmUrl from "loro-crdt/web/loro_wasm_bg.wasm?url";

await init({ module_or_path: wasmUrl });

export * from "loro-crdt/web";
