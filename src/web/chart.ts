import type { HourCounts } from '../trace/index.js';
import { escape } from './html.js';

const COLORS = { sent: '#1b7f45', deferred: '#b86e00', failed: '#b3261e' } as const;
const WIDTH = 480;
const HEIGHT = 140;
const PLOT = { left: 30, top: 8, bottom: 22 };

/**
 * Messages sent, deferred and failed per hour over the last 24 hours, as stacked bars in inline
 * SVG (no script, no external asset). Its text alternative gives the totals and the busiest hour.
 */
export function hourlyChart(account: string, hours: HourCounts[]): string {
  const totals = hours.reduce((sum, hour) => ({ sent: sum.sent + hour.sent, deferred: sum.deferred + hour.deferred, failed: sum.failed + hour.failed }), { sent: 0, deferred: 0, failed: 0 });
  const peak = Math.max(1, ...hours.map((hour) => hour.sent + hour.deferred + hour.failed));
  const busiest = hours.reduce((best, hour) => (hour.sent + hour.deferred + hour.failed > best.sent + best.deferred + best.failed ? hour : best), hours[0]);
  const plotHeight = HEIGHT - PLOT.top - PLOT.bottom;
  const slot = (WIDTH - PLOT.left) / hours.length;
  const bars = hours
    .map((hour, index) => {
      let y = HEIGHT - PLOT.bottom;
      const x = PLOT.left + index * slot + 1;
      return (['sent', 'deferred', 'failed'] as const)
        .map((kind) => {
          if (hour[kind] === 0) return '';
          const height = Math.max(1, (hour[kind] / peak) * plotHeight);
          y -= height;
          return `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(slot - 2).toFixed(1)}" height="${height.toFixed(1)}" fill="${COLORS[kind]}"/>`;
        })
        .join('');
    })
    .join('');
  const labels = hours
    .map((hour, index) => (index % 6 === 0 ? `<text x="${(PLOT.left + index * slot).toFixed(1)}" y="${HEIGHT - 6}" font-size="10" fill="#333">${new Date(hour.hour).toISOString().slice(11, 16)}</text>` : ''))
    .join('');
  const id = `chart-${escape(account)}`;
  const summary = `Last 24 hours: ${totals.sent} sent, ${totals.deferred} deferred, ${totals.failed} failed${totals.sent + totals.deferred + totals.failed ? `; busiest hour ${new Date(busiest.hour).toISOString().slice(11, 16)} UTC` : ''}.`;
  return `<figure>
<svg class="chart" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-labelledby="${id}-title ${id}-desc"><title id="${id}-title">Messages per hour for ${escape(account)}</title><desc id="${id}-desc">${summary}</desc>
<line x1="${PLOT.left}" y1="${HEIGHT - PLOT.bottom}" x2="${WIDTH}" y2="${HEIGHT - PLOT.bottom}" stroke="#888"/>
<text x="0" y="${PLOT.top + 8}" font-size="10" fill="#333">${peak}</text><text x="0" y="${HEIGHT - PLOT.bottom}" font-size="10" fill="#333">0</text>
${bars}${labels}</svg>
<figcaption class="legend"><span><span class="swatch" style="background:${COLORS.sent}"></span>sent ${totals.sent}</span><span><span class="swatch" style="background:${COLORS.deferred}"></span>deferred ${totals.deferred}</span><span><span class="swatch" style="background:${COLORS.failed}"></span>failed ${totals.failed}</span> <small>(hours in UTC)</small></figcaption>
</figure>`;
}
