/**
 * A binned timeline on a <canvas>: a row per worker slot, runs of equal cells as
 * one rectangle in the colour of their state (an orange top stripe where the call
 * was retried), a time axis below; drawn over any span [lo, hi] of the binned
 * [t0, t1] (a zoom stretches what is there until the kernel bins it anew).
 * Used by the job view's Timeline tab (charts.ts) and the side panel.
 */
import { seconds, ticks } from './histogram';
import { STATE_COLOURS, STATE_NAMES } from './states';

export const RETRIED = 0x80;
const RETRY_COLOUR = STATE_COLOURS[5];
export const LEFT = 130; // room for the row labels
export const RIGHT = 12;
export const AXIS = 22;
const MAX_PITCH = 16;
const MIN_PITCH = 3;
const MAX_HEIGHT = 300;

/** What a timeline canvas shows: binned rows over [t0, t1], seen over [lo, hi]. */
export interface ITimeline {
  rows: string[];
  buckets: number;
  t0: number;
  t1: number;
  cells: Uint8Array;
  lo: number;
  hi: number;
}

/** Draw `tl` on `canvas` (its width already set); returns the row pitch. */
export function drawTimeline(
  canvas: HTMLCanvasElement,
  tl: ITimeline,
  textColour: string,
  left: number = LEFT
): number {
  const rows = tl.rows.length;
  const pitch = Math.max(MIN_PITCH, Math.min(MAX_PITCH, Math.floor(MAX_HEIGHT / Math.max(1, rows))));
  const height = rows * pitch + AXIS + 2;
  if (canvas.height !== height) {
    canvas.height = height;
    canvas.style.height = `${height}px`;
  }
  const ctx = canvas.getContext('2d');
  if (!ctx) {
    return pitch;
  }
  const width = canvas.width;
  const plotW = Math.max(1, width - left - RIGHT);
  ctx.clearRect(0, 0, width, height);
  ctx.font = `${Math.min(11, Math.max(8, pitch - 2))}px sans-serif`;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  ctx.fillStyle = textColour;
  if (pitch >= 9) {
    tl.rows.forEach((label, r) => ctx.fillText(label, left - 6, r * pitch + pitch / 2, left - 8));
  }
  const span = tl.hi - tl.lo || 1;
  const bucketT = (tl.t1 - tl.t0) / Math.max(1, tl.buckets);
  const xOf = (t: number): number => left + ((t - tl.lo) / span) * plotW;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, 0, plotW, rows * pitch);
  ctx.clip();
  for (let r = 0; r < rows; r++) {
    const base = r * tl.buckets;
    let k = 0;
    while (k < tl.buckets) {
      const code = tl.cells[base + k] || 0;
      let end = k + 1;
      while (end < tl.buckets && tl.cells[base + end] === code) {
        end++;
      }
      if (code) {
        const x0 = xOf(tl.t0 + k * bucketT);
        const x1 = Math.max(x0 + 1, xOf(tl.t0 + end * bucketT));
        const h = Math.max(1, pitch - 1);
        ctx.fillStyle = STATE_COLOURS[(code & ~RETRIED) - 1] || '#000000';
        ctx.fillRect(Math.floor(x0), r * pitch, Math.ceil(x1 - x0), h);
        if (code & RETRIED) {
          ctx.fillStyle = RETRY_COLOUR;
          ctx.fillRect(Math.floor(x0), r * pitch, Math.ceil(x1 - x0), Math.max(1, h / 4));
        }
      }
      k = end;
    }
  }
  ctx.restore();
  const axisY = rows * pitch + 1;
  ctx.strokeStyle = '#999999';
  ctx.beginPath();
  ctx.moveTo(left, axisY + 0.5);
  ctx.lineTo(left + plotW, axisY + 0.5);
  ctx.stroke();
  ctx.fillStyle = textColour;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  ctx.font = '11px sans-serif';
  for (const t of ticks(tl.lo, tl.hi, Math.max(2, Math.floor(plotW / 90)))) {
    const x = xOf(t);
    ctx.fillRect(Math.round(x), axisY, 1, 4);
    ctx.fillText(t === 0 ? '0' : seconds(t), x, axisY + 6);
  }
  return pitch;
}

/** The states (and retries) a timeline shows, as a legend. */
export function legendHtml(cells: Uint8Array): string {
  const seen = new Set<number>();
  for (let i = 0; i < cells.length; i++) {
    seen.add(cells[i]);
  }
  const items: string[] = [];
  STATE_NAMES.forEach((name, code) => {
    if (seen.has(code + 1) || seen.has((code + 1) | RETRIED)) {
      items.push(`<span class="sif-charts-key"><i style="background:${STATE_COLOURS[code]}"></i>${name}</span>`);
    }
  });
  if ([...seen].some(c => c & RETRIED)) {
    items.push(`<span class="sif-charts-key"><i class="sif-charts-retried"></i>retried</span>`);
  }
  return items.join('');
}
