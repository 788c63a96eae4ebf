// A `solc` command for forge backed by the pinned solc-js (npm `solc`):
// answers `--version` as native solc does and compiles Standard JSON from
// stdin (forge sends every source's content in it). Output is written
// synchronously: solc-js's own CLI exits before a large answer is flushed
// to a pipe.
//
//   node solc-cli.js SOLC_MODULE_DIR --version | [--standard-json ...]
"use strict";
const fs = require("fs");
const path = require("path");

const [solcDir, ...args] = process.argv.slice(2);
const solc = require(path.resolve(solcDir));
if (args.includes("--version")) {
  fs.writeSync(1, `solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
  process.exit(0);
}
if (!args.includes("--standard-json")) {
  fs.writeSync(2, "solc-cli.js: only --version and --standard-json are supported\n");
  process.exit(2);
}
const input = fs.readFileSync(0, "utf8");
const noImports = () => ({ error: "imports are resolved by the caller: send every source's content" });
fs.writeSync(1, solc.compile(input, { import: noImports }));
