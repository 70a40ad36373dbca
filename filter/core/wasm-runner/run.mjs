// Runs a test binary built for wasm32-wasip1 in Node's WebAssembly VM (V8, as in Envoy) with WASI:
// cargo's runner for that target (see the Makefile's test-core-wasm). The whole file system is
// visible at its own paths, so tests find their fixtures through CARGO_MANIFEST_DIR.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";

const [binary, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [binary, ...args], env: process.env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(binary));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
