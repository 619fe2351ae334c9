import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { DEVICE, message, promtool, sendRaw, startProvider, startRelay, stopStarted, type TestRelay } from './helpers.js';

/*
 * deploy/monitoring as an operator installs it: rules Prometheus' own promtool accepts, that fire
 * when they should (promtool test rules), that name only metrics the relay exposes, with a runbook
 * entry in the README; a dashboard naming only exposed metrics; and /metrics passing promtool's lint.
 */

const MONITORING = path.resolve('deploy/monitoring');
type Rule = { alert: string; expr: string; for?: string; annotations: Record<string, string> };
type Panel = { type: string; targets?: { expr: string }[]; datasource?: { uid: string } };

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
const anchor = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
/** Metric names in PromQL, with a histogram's series names reduced to the histogram. */
const metricNames = (expr: string) => (expr.match(/smtp_relay_[a-z_]+/g) ?? []).map((name) => name.replace(/_(bucket|sum|count)$/, ''));

describe('alerts and dashboards (deploy/monitoring)', () => {
  let relay: TestRelay;
  let exposed: string;
  let rules: { groups: { name: string; rules: Rule[] }[] };

  beforeAll(async () => {
    const provider = await startProvider();
    relay = await startRelay(provider);
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: scrape'], 'x') });
    await sendRaw(relay.port, { from: 'scan@printers.local', to: ['alice@example.com'], raw: message(['Subject: x'], 'x') }, { ...DEVICE, password: 'wrong' }).catch(() => undefined);
    exposed = await (await fetch(`http://127.0.0.1:${relay.httpPort}/metrics`)).text();
    rules = parse(await readFile(path.join(MONITORING, 'alerts.yaml'), 'utf8'));
  });
  afterAll(stopStarted);

  it('passes `promtool check metrics` with no findings, on a relay that has done some work', async () => {
    const result = await promtool(['check', 'metrics'], exposed);
    expect(result.output.trim()).toBe('');
    expect(result.code).toBe(0);
  });

  it('ships rules promtool accepts, each naming only exposed metrics, saying what to do and linking its README entry', async () => {
    expect((await promtool(['check', 'rules', path.join(MONITORING, 'alerts.yaml')])).output).toMatch(/SUCCESS: 12 rules found/);
    const readme = await readFile('README.md', 'utf8');
    const anchors = new Set([...readme.matchAll(/^#+ (.+)$/gm)].map((match) => anchor(match[1])));
    const alerts = rules.groups.flatMap((group) => group.rules);
    expect(alerts.map((rule) => rule.alert)).toEqual(expect.arrayContaining(['SmtpRelayDown', 'SmtpRelayTokenRefreshFailing', 'SmtpRelayAccountHeld', 'SmtpRelayCredentialExpiringSoon', 'SmtpRelayQueueOld', 'SmtpRelayPermanentFailures', 'SmtpRelayAuthFailureSpike', 'SmtpRelayLockouts', 'SmtpRelaySpoolNearFull', 'SmtpRelayClusterStoreDown']));
    for (const rule of alerts) {
      for (const metric of metricNames(rule.expr)) expect(exposed, `${rule.alert}: ${metric}`).toMatch(new RegExp(`^# TYPE ${metric} `, 'm'));
      expect(rule.annotations.description.length, rule.alert).toBeGreaterThan(40);
      expect(anchors, `${rule.alert} links ${rule.annotations.runbook_url}`).toContain(rule.annotations.runbook_url.split('#')[1]);
    }
  });

  it('fires each alert when it should and not before (promtool test rules)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'relay-alerts-'));
    // What fires is under test here, not the wording: the copy under test has no annotations.
    const bare = { groups: rules.groups.map((group) => ({ ...group, rules: group.rules.map(({ annotations: _words, ...rule }) => rule) })) };
    await writeFile(path.join(dir, 'alerts.yaml'), stringify(bare));
    const alert = (name: string, at: string, fires: Record<string, string>[]) => ({ eval_time: at, alertname: name, exp_alerts: fires.map((labels) => ({ exp_labels: labels })) });
    const day = 86_400;
    const tests = {
      rule_files: ['alerts.yaml'],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: [
            { series: 'smtp_relay_account_held{account="office"}', values: '0 0 1x20' },
            { series: 'smtp_relay_account_ready{account="office"}', values: '1 1 0x20' },
            { series: 'smtp_relay_spool_bytes{instance="a"}', values: '900x20' },
            { series: 'smtp_relay_spool_limit_bytes{instance="a"}', values: '1000x20' },
            // time() starts at 0: 14 days and 5 minutes from then, then 60 days.
            { series: 'smtp_relay_credential_expiry_timestamp_seconds{account="office",credential="client_secret"}', values: `${14 * day + 300}x20` },
            { series: 'smtp_relay_credential_expiry_timestamp_seconds{account="office",credential="refresh_token"}', values: `${60 * day}x20` },
            { series: 'smtp_relay_smtp_auth_lockouts_total{instance="a",scope="ip"}', values: '0 0 0 1 1 1' },
            { series: 'up{job="smtp-oauth-relay",instance="a"}', values: '1 1 0x20' },
          ],
          alert_rule_test: [
            alert('SmtpRelayAccountHeld', '4m', []),
            alert('SmtpRelayAccountHeld', '8m', [{ account: 'office', severity: 'critical' }]),
            alert('SmtpRelayAccountNotReady', '20m', []), // held says it already
            alert('SmtpRelaySpoolNearFull', '5m', []),
            alert('SmtpRelaySpoolNearFull', '12m', [{ instance: 'a', severity: 'warning' }]),
            alert('SmtpRelayCredentialExpiringSoon', '4m', []),
            alert('SmtpRelayCredentialExpiringSoon', '6m', [{ account: 'office', credential: 'client_secret', severity: 'warning' }]),
            alert('SmtpRelayLockouts', '4m', [{ instance: 'a', scope: 'ip', severity: 'warning' }]),
            alert('SmtpRelayDown', '4m', []),
            alert('SmtpRelayDown', '8m', [{ job: 'smtp-oauth-relay', instance: 'a', severity: 'critical' }]),
          ],
        },
      ],
    };
    await writeFile(path.join(dir, 'tests.yaml'), stringify(tests));
    const result = await promtool(['test', 'rules', path.join(dir, 'tests.yaml')]);
    expect(result.output).toMatch(/SUCCESS/);
    expect(result.code).toBe(0);
  });

  it('keeps the Kubernetes PrometheusRule identical to deploy/monitoring/alerts.yaml', async () => {
    const rule = parse(await readFile('deploy/kubernetes/prometheusrule.yaml', 'utf8')) as { kind: string; spec: unknown };
    expect(rule.kind).toBe('PrometheusRule');
    expect(rule.spec).toEqual({ groups: rules.groups });
  });

  it('ships a Grafana dashboard whose every panel queries exposed metrics through the chosen data source', async () => {
    const dashboard = JSON.parse(await readFile(path.join(MONITORING, 'grafana-dashboard.json'), 'utf8')) as { uid: string; panels: Panel[]; templating: { list: { name: string }[] } };
    expect(dashboard.templating.list.map((variable) => variable.name)).toEqual(['datasource', 'instance', 'account']);
    const panels = dashboard.panels.filter((panel) => panel.type !== 'row');
    expect(panels.length).toBeGreaterThan(12);
    for (const panel of panels) {
      expect(panel.datasource?.uid).toBe('${datasource}');
      for (const target of panel.targets ?? []) for (const metric of metricNames(target.expr)) expect(exposed, metric).toMatch(new RegExp(`^# TYPE ${metric} `, 'm'));
    }
  });
});
