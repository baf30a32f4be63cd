// Checks HTML files against the caniemail database (doiuse-email) for the given client globs.
// Usage: node doiuse.mjs CLIENTS_JSON FILE... ; prints one JSON object: {file: {errors, warnings}}.
import { readFileSync } from "node:fs";
import { doIUseEmail } from "@jsx-email/doiuse-email";

const [clients, ...files] = process.argv.slice(2);
const out = {};
for (const file of files) {
  const result = doIUseEmail(readFileSync(file, "utf8"), { emailClients: JSON.parse(clients) });
  out[file] = { errors: result.errors ?? [], warnings: result.warnings };
}
process.stdout.write(JSON.stringify(out));
