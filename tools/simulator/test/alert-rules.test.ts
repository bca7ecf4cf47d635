import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  alertRules,
  PRODUCTION_TIMING,
  promDuration,
  renderAlertRules,
} from '../src/lib/prometheus/alert-rules.js';
import { simulatorAlertTiming } from '../src/lib/prometheus/prometheus-server.js';
import { which } from './support/which.js';

const ROOT = join(__dirname, '..', '..', '..');
const RULES_FILE = join(ROOT, 'ops', 'prometheus', 'usagekit.rules.yml');
const RULE_TESTS = join(ROOT, 'ops', 'prometheus', 'tests', 'usagekit.rules.test.yml');
const RUNBOOK = join(ROOT, 'docs', 'operations.md');

describe('the shipped alert rules', () => {
  it('are the production rendering of the template (re-render with __render-rules when this fails)', () => {
    expect(readFileSync(RULES_FILE, 'utf8')).toBe(renderAlertRules(PRODUCTION_TIMING));
  });

  it('link every alert to a section of docs/operations.md', () => {
    // GitHub's anchor for "### UsagekitTelemetryStalled" is "#usagekittelemetrystalled".
    const anchors = new Set(
      [...readFileSync(RUNBOOK, 'utf8').matchAll(/^#{2,4} (.+)$/gm)].map((match) =>
        match[1]!
          .trim()
          .toLowerCase()
          .replace(/[^\w\- ]/g, '')
          .replace(/ /g, '-'),
      ),
    );
    const rules = alertRules(PRODUCTION_TIMING);
    expect(rules.length).toBeGreaterThanOrEqual(9);
    for (const rule of rules)
      expect([rule.alert, anchors.has(rule.anchor)]).toEqual([rule.alert, true]);
  });

  it('writes durations in the largest whole unit', () => {
    expect([86_400, 2_700, 300, 90, 7.5, 1].map(promDuration)).toEqual([
      '1d',
      '45m',
      '5m',
      '90s',
      '7500ms',
      '1s',
    ]);
  });

  const promtool = which('promtool', 'apt-get install -y prometheus');
  const withPromtool = promtool ? it : it.skip;

  withPromtool('pass promtool check rules, in the production and the simulator rendering', () => {
    const dir = mkdtempSync(join(tmpdir(), 'usagekit-rules-'));
    try {
      const simulatorRules = join(dir, 'simulator.rules.yml');
      writeFileSync(
        simulatorRules,
        renderAlertRules(simulatorAlertTiming({ flushIntervalMs: 1_000, periodMs: 5_000 })),
      );
      const output = execFileSync(promtool!, ['check', 'rules', RULES_FILE, simulatorRules], {
        encoding: 'utf8',
      });
      expect(output.match(/SUCCESS: (\d+) rules found/g)).toHaveLength(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  withPromtool(
    'pass promtool test rules: each alert fires on its series and not on the others',
    () => {
      // execFileSync throws (and the test fails with promtool's diff) on any failed case.
      const output = execFileSync(promtool!, ['test', 'rules', RULE_TESTS], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      expect(output).toContain('SUCCESS');
    },
  );
});
