/**
 * `pnpm build`: each service as one ES module, for production starts (`pnpm --filter @haven/api
 * start`, `pnpm --filter @haven/worker start`, the Docker image, `pnpm bench`).
 *
 * Why a bundle rather than tsx in production: tsx compiles on the fly in a loader thread of its own
 * and keeps its transforms in memory; a process started through it sat 38 MB higher at rest (API:
 * 144 MB against 106 MB) and issue 6 asks for under 200 MB under load. esbuild is the compiler tsx
 * already uses, so it adds nothing new to the install.
 *
 * What goes in: the service's own code and the workspace packages it imports (their entry points
 * are TypeScript). What stays out: every npm package, loaded from the service's node_modules at run
 * time, so each service lists what its bundle imports among its own dependencies. Drizzle's
 * migrator reads the migrations folder next to the module (`../migrations`), so the build copies
 * packages/schema/migrations into each service's dist/: a bundle always carries the migrations it
 * was built with.
 *
 * Output: services/<name>/dist/bin/<entry>.mjs and services/<name>/dist/migrations/.
 */
import { cpSync, readFileSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = new URL('..', import.meta.url)
const path = (relative: string) => fileURLToPath(new URL(relative, root))

export const services = [
  { name: 'api', dir: 'services/api', entry: 'src/server.ts', out: 'dist/bin/server.mjs' },
  { name: 'worker', dir: 'services/worker', entry: 'src/main.ts', out: 'dist/bin/main.mjs' }
] as const

/** Every npm package a service or the workspace packages it bundles depend on. */
function npmPackages (dir: string): string[] {
  const manifests = [`${dir}/package.json`, 'packages/schema/package.json']
    .map((file) => JSON.parse(readFileSync(path(file), 'utf8')) as { dependencies?: Record<string, string> })
  return [...new Set(manifests.flatMap((manifest) => Object.keys(manifest.dependencies ?? {})))]
    .filter((name) => !name.startsWith('@haven/'))
}

export async function buildServices (): Promise<void> {
  for (const service of services) {
    rmSync(path(`${service.dir}/dist`), { recursive: true, force: true })
    const result = await build({
      entryPoints: [path(`${service.dir}/${service.entry}`)],
      outfile: path(`${service.dir}/${service.out}`),
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      sourcemap: true,
      external: npmPackages(service.dir).flatMap((name) => [name, `${name}/*`]),
      metafile: true,
      logLevel: 'warning'
    })
    // An npm package missing from the service's dependencies would be inlined: refuse instead.
    const inlined = Object.keys(result.metafile.inputs).filter((input) => input.includes('node_modules/'))
    if (inlined.length > 0) throw new Error(`${service.dir}: add to its dependencies what the bundle would inline: ${inlined.slice(0, 5).join(', ')}`)
    cpSync(path('packages/schema/migrations'), path(`${service.dir}/dist/migrations`), { recursive: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await buildServices()
  process.stdout.write(`built ${services.map((service) => `${service.dir}/${service.out}`).join(', ')}\n`)
}
