/** Root `pnpm audit:verify` (issue 4): recomputes the audit chain and checks it against the latest signed checkpoint. */
process.stderr.write('audit:verify is not built yet\n')
process.exit(2)
