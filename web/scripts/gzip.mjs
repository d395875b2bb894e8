// Writes a gzipped twin (`name.gz`) of each compressible file in dist/: `hakiri control
// serve` sends it to browsers that accept gzip (the Loro WASM: 3.5 MB, 1.2 MB gzipped).
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync, constants } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const compressible = /\.(js|mjs|css|html|wasm|svg|json|map)$/;
let files = 0, before = 0, after = 0;
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (compressible.test(name)) {
      const data = readFileSync(path);
      const gz = gzipSync(data, { level: constants.Z_BEST_COMPRESSION });
      writeFileSync(path + ".gz", gz);
      files++; before += data.length; after += gz.length;
    }
  }
}
walk(dist);
console.log(`gzip: ${files} files, ${(before / 1024).toFixed(0)} KiB -> ${(after / 1024).toFixed(0)} KiB`);
