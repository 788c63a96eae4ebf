// Compiles src/PaymentChannel.sol with the pinned solc (npm `solc`, the
// version scripts/contracts installs) and writes its ABI and bytecode to
// artifacts/PaymentChannel.json; with --check, fails if the committed
// artifact differs from a fresh compile.
//
//   node layer2/contracts/compile.js SOLC_MODULE_DIR [--check]
"use strict";
const fs = require("fs");
const path = require("path");

const [solcDir, mode] = process.argv.slice(2);
if (!solcDir) {
  console.error("usage: compile.js SOLC_MODULE_DIR [--check]");
  process.exit(2);
}
const solc = require(path.resolve(solcDir));
const here = __dirname;
const name = "PaymentChannel";
const file = `src/${name}.sol`;
const input = {
  language: "Solidity",
  sources: { [file]: { content: fs.readFileSync(path.join(here, file), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === "error");
for (const e of out.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
const c = out.contracts[file][name];
const artifact = {
  contractName: name,
  compiler: `solc ${solc.version()}`,
  settings: input.settings,
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
  deployedBytecode: "0x" + c.evm.deployedBytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
const dest = path.join(here, "artifacts", `${name}.json`);
if (mode === "--check") {
  const committed = fs.existsSync(dest) ? fs.readFileSync(dest, "utf8") : "";
  if (committed !== text) {
    console.error(
      `${path.relative(process.cwd(), dest)} differs from a fresh compile of ${file} ` +
        `(${artifact.compiler}): run scripts/contracts --write and commit the artifact`
    );
    process.exit(1);
  }
  console.log(`${name}: the committed artifact matches a fresh compile (${artifact.compiler})`);
} else {
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.writeFileSync(dest, text);
  console.log(`${name}: wrote ${path.relative(process.cwd(), dest)} (${artifact.compiler})`);
}
