/** HTML building blocks of the console: escaping, dates, the page frame. Server-rendered, no script. */
import { formatDuration } from '../config/index.js';

export const escape = (text: string) => text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);

export function when(at: string | number | undefined): string {
  if (at === undefined) return 'never';
  return new Date(at).toLocaleString('en-GB', { timeZone: 'UTC', dateStyle: 'medium', timeStyle: 'short' }) + ' UTC';
}

/** "3 min", "5 h", "2 days": how long ago or how far ahead. */
export const span = formatDuration;

export function bytes(value: number): string {
  const size = Number(value) || 0; // another replica's record: a number whatever it sent
  if (size < 1024) return `${size} B`;
  if (size < 1024 ** 2) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / 1024 ** 2).toFixed(1)} MB`;
}

export interface Notice {
  kind: 'ok' | 'error';
  text: string;
}

export type Section = 'overview' | 'messages' | 'queue' | 'devices' | 'setup';
const SECTIONS: [Section, string, string][] = [
  ['overview', '/', 'Overview'],
  ['messages', '/messages', 'Messages'],
  ['queue', '/queue', 'Queue'],
  ['devices', '/devices', 'Devices'],
  ['setup', '/setup', 'Set up'],
];

/** This session's CSRF token for the forms of a page, or undefined on a read-only console (no http.adminPasswordHash): then no form is shown. */
export type Csrf = string | undefined;

/** A POST form with this session's CSRF token; `fields` are hidden inputs. Nothing on a read-only console. */
export function actionForm(action: string, csrf: Csrf, label: string, fields: Record<string, string> = {}, kind: 'plain' | 'danger' = 'plain'): string {
  if (csrf === undefined) return '';
  const hidden = Object.entries(fields)
    .map(([name, value]) => `<input type="hidden" name="${escape(name)}" value="${escape(value)}">`)
    .join('');
  return `<form method="post" action="${escape(action)}" class="inline"><input type="hidden" name="csrf" value="${csrf}">${hidden}<button${kind === 'danger' ? ' class="danger"' : ''}>${escape(label)}</button></form>`;
}

/** A table that scrolls sideways on a phone; focusable so a keyboard can scroll it too. */
export function table(caption: string, headings: string[], rows: string[][]): string {
  const head = headings.map((heading) => `<th scope="col">${heading}</th>`).join('');
  const labels = headings.map((heading) => escape(heading.replace(/<[^>]*>/g, '')));
  const body = rows.map((cells) => `<tr>${cells.map((cell, column) => `<td data-label="${labels[column]}">${cell}</td>`).join('')}</tr>`).join('\n');
  return `<div class="scroll" role="region" aria-label="${escape(caption)}" tabindex="0"><table><caption>${escape(caption)}</caption><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div>`;
}

const STYLE = `
 *{box-sizing:border-box}
 body{font-family:system-ui,sans-serif;margin:0;color:#1f1f1f;background:#f6f7f9;line-height:1.45}
 .skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;padding:.5rem;z-index:1}
 header{background:#14365d;color:#fff;padding:.6rem 1rem}
 header p{margin:0;font-weight:600}
 nav ul{list-style:none;margin:.4rem 0 0;padding:0;display:flex;flex-wrap:wrap;gap:.2rem .9rem}
 nav a{color:#fff;text-decoration:none;padding:.15rem 0;display:inline-block}
 nav a[aria-current=page]{border-bottom:3px solid #ffd24d;font-weight:600}
 nav a:focus,a:focus,button:focus,input:focus,select:focus,summary:focus,.scroll:focus{outline:3px solid #ffbf00;outline-offset:2px}
 main{max-width:64rem;margin:0 auto;padding:1rem}
 h1{font-size:1.35rem;margin:.2rem 0 1rem} h2{font-size:1.1rem;margin:0 0 .5rem} h2 small{font-weight:normal;color:#4a4a4a}
 h3{font-size:1rem;margin:.8rem 0 .3rem}
 .card{background:#fff;border:1px solid #d0d4da;border-radius:.5rem;padding:1rem;margin:0 0 1rem}
 .ok{color:#0b6b33;font-weight:600} .bad{color:#a4161a;font-weight:600} .warn{color:#7a4b00;font-weight:600}
 .loud{background:#fde7e9;border:2px solid #a4161a;border-radius:.4rem;padding:.6rem}
 .notice{padding:.7rem 1rem;border-radius:.5rem;margin-bottom:1rem} .notice.ok{background:#e3f3e8} .notice.error{background:#fce8e6}
 button{font-size:1rem;padding:.45rem .9rem;border-radius:.4rem;border:1px solid #5f6670;background:#fff;color:#1f1f1f;cursor:pointer;min-height:2.5rem}
 button.danger{border-color:#a4161a;color:#a4161a}
 form.inline,details.inline{display:inline-block;margin:.15rem .3rem .15rem 0}
 label{display:block;font-weight:600;margin:.3rem 0 0}
 input,select{font-size:1rem;padding:.4rem;width:100%;margin:.2rem 0 .6rem;border:1px solid #5f6670;border-radius:.3rem;background:#fff;color:#1f1f1f}
 .filters{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:0 .8rem;align-items:end}
 .scroll{overflow-x:auto;margin:.5rem 0}
 table{border-collapse:collapse;width:100%;font-size:.92rem;background:#fff}
 caption{text-align:left;font-weight:600;padding:.3rem 0}
 th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e1e4e8;vertical-align:top}
 th{background:#eef1f4} td strong{white-space:nowrap}
 dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .9rem;margin:.4rem 0} dt{color:#4a4a4a} dd{margin:0}
 ol.timeline{padding-left:1.2rem} ol.timeline li{margin:.3rem 0}
 code,pre{font-family:ui-monospace,monospace;font-size:.88rem;background:#eef1f4;border-radius:.25rem}
 code{padding:.05rem .25rem} pre{padding:.6rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
 svg.chart{width:100%;height:auto;max-width:36rem;display:block}
 .legend span{margin-right:1rem;white-space:nowrap} .swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle;border-radius:.15rem}
 @media (max-width:40rem){
  .scroll table,.scroll caption,.scroll tbody,.scroll tr,.scroll td{display:block;width:100%}
  .scroll thead{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
  .scroll tr{border-bottom:2px solid #d0d4da;padding:.4rem 0}
  .scroll td{border:0;padding:.1rem 0}
  .scroll td::before{content:attr(data-label) ": ";font-weight:600;color:#4a4a4a}
 }
 footer{max-width:64rem;margin:0 auto;padding:0 1rem 2rem;color:#4a4a4a;font-size:.9rem} footer a{color:#14365d}
 a{color:#14365d}
`;

/** The frame of every console page: navigation, one h1, the notice, the content. */
export function layout(section: Section, title: string, content: string, notice?: Notice): string {
  const links = SECTIONS.map(([name, href, label]) => `<li><a href="${href}"${name === section ? ' aria-current="page"' : ''}>${label}</a></li>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)} · smtp-oauth-relay</title>
<style>${STYLE}</style></head><body>
<a class="skip" href="#main">Skip to content</a>
<header><p>smtp-oauth-relay</p><nav aria-label="Console"><ul>${links}</ul></nav></header>
<main id="main">
<h1>${escape(title)}</h1>
${notice ? `<div class="notice ${notice.kind}" role="status">${escape(notice.text)}</div>` : ''}
${content}
</main>
<footer><a href="/readyz/accounts">/readyz/accounts</a> · <a href="/metrics">/metrics</a></footer>
</body></html>`;
}
