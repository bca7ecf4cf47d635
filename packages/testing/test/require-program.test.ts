import { REQUIRE_PROGRAMS_ENV, requireProgram } from '../src/index.js';

// The skip rule every suite that needs another program relies on: a path when it is there,
// one printed line and undefined when it is not, and a failure instead under CI's variable.

const MISSING = 'usagekit-no-such-program-7f3a';
let saved: string | undefined;
let written: string[];
let write: jest.SpyInstance;

beforeEach(() => {
  saved = process.env[REQUIRE_PROGRAMS_ENV];
  delete process.env[REQUIRE_PROGRAMS_ENV];
  written = [];
  write = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => {
    written.push(String(chunk));
    return true;
  });
});

afterEach(() => {
  write.mockRestore();
  if (saved === undefined) delete process.env[REQUIRE_PROGRAMS_ENV];
  else process.env[REQUIRE_PROGRAMS_ENV] = saved;
});

test('a program on PATH: its path, nothing printed', () => {
  const path = requireProgram('node', 'install Node.js');
  expect(path).toMatch(/\/node$/);
  expect(written).toEqual([]);
});

test('a missing program: undefined and exactly one line naming it and how to install it', () => {
  expect(requireProgram(MISSING, 'apt-get install it')).toBeUndefined();
  expect(written).toEqual([
    `[usagekit/testing] skipped: ${MISSING} not installed (install: apt-get install it)\n`,
  ]);
});

test(`${REQUIRE_PROGRAMS_ENV}=1 turns the skip into a failure`, () => {
  process.env[REQUIRE_PROGRAMS_ENV] = '1';
  expect(() => requireProgram(MISSING, 'apt-get install it')).toThrow(
    `required but missing: ${MISSING} not installed (install: apt-get install it)`,
  );
  expect(written).toEqual([]);
});
