/** The benchmark's table: each figure with its baseline, ratio and target, printed as it is taken. */

export interface Row {
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
  target?: string;
  met?: boolean;
}

export const rows: Row[] = [];

export function record(row: Row): void {
  rows.push(row);
  const figure = `${row.value.toFixed(row.unit === 'msg/s' ? 1 : 2)} ${row.unit}`;
  const base = row.baseline !== undefined ? `  baseline ${row.baseline.toFixed(row.unit === 'msg/s' ? 1 : 2)}` : '';
  const ratio = row.ratio !== undefined ? `  ratio ${row.ratio.toFixed(2)}` : '';
  const target = row.target ? `  target ${row.target}: ${row.met ? 'met' : 'MISSED'}` : '';
  process.stdout.write(`${row.name.padEnd(48)} ${figure.padStart(14)}${base}${ratio}${target}\n`);
}

