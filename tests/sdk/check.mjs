// What the SDK scripts share: one line per check, exit 1 at the first failure.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export function check(name, ok, detail) {
  if (!ok) {
    console.log(`FAIL ${name}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  console.log(`ok ${name}`);
}
