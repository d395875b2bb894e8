#!/usr/bin/env node
// For development: starts the OIDC provider, a control plane and `vite preview` (of dist/)
// on free ports, prints the URL, and runs until Ctrl-C.
//   npm run build && node e2e/serve.mjs
import { startStack } from "./harness.mjs";

const stack = await startStack({ keep: true });
console.log(`web UI:        ${stack.base}`);
console.log(`control plane: ${stack.controlUrl}  (data ${stack.data})`);
console.log(`OIDC provider: ${stack.oidcUrl}`);
console.log(`logs:          ${stack.logDir}`);
console.log(`a token:       ${stack.token("alice")}`);
const stop = async () => {
  await stack.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
setInterval(() => {}, 1 << 30);
