/**
 * The histogram of call durations on a <canvas> (log axis when the kernel says
 * the durations span decades), its median and p95 as labelled dashed lines;
 * and the axis helpers the timeline shares.
 */
import { STATE_COLOURS } from './states';

const DEFAULT_LEFT = 130;
const RIGHT = 12;
const HEIGHT = 150;
const TOP = 18;
const AXIS = 20;
const BAR_COLOUR = STATE_COLOURS[2];
const P95_COLOUR = STATE_COLOURS[3];

export interface IHistogram {
  n?: number;
  edges?: number[];
  counts?: number[];
  log?: boolean;
  median?: number;
  p95?: number;
}

/** A duration for an axis label: 250 ms, 1.5 s, 2 min (as display/svg.py). */
export function seconds(v: number): string {
  if (v === 0) {
    return '0 s';
  }
  if (v < 1e-3) {
    return `${(v * 1e6).toFixed(0)} µs`;
  }
  if (v < 1) {
    return `${+(v * 1e3).toPrecision(3)} ms`;
  }
  if (v < 120) {
    return `${+v.toPrecision(3)} s`;
  }
  return `${+(v / 60).toPrecision(3)} min`;
}

/** Round values between lo and hi for about `count` ticks. */
export function ticks(lo: number, hi: number, count: number): number[] {
  const span = hi - lo;
  if (!(span > 0)) {
    return [lo];
  }
  const raw = span / count;
  let step = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) {
    if (m * step >= raw) {
      step *= m;
      break;
    }
  }
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(+v.toPrecision(12));
  }
  return out;
}

/** Ticks of a log axis: the decades, with 2 and 5 times them when few decades show. */
export function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  const inRange = (v: number): boolean => v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9);
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    out.push(Math.pow(10, e));
  }
  if (out.filter(inRange).length < 3) {
    out.push(...out.flatMap(v => [2 * v, 5 * v]));
  }
  return out.filter(inRange).sort((a, b) => a - b);
}

export function drawHistogram(
  canvas: HTMLCanvasElement,
  h: IHistogram,
  text: string,
  LEFT: number = DEFAULT_LEFT
): void {
  const edges = h.edges || [];
  const counts = h.counts || [];
  const height = edges.length > 1 ? HEIGHT : 0;
  canvas.height = height;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext('2d');
  if (!ctx || !height) {
    return;
  }
  const width = canvas.width;
  const plotW = Math.max(1, width - LEFT - RIGHT);
  // a narrow canvas (the side panel) names the median and p95 on a line of their own
  const narrow = width < 480;
  const top = narrow ? TOP + 14 : TOP;
  const legendY = narrow ? 16 : 2;
  const lo = edges[0];
  const hi = edges[edges.length - 1];
  const f = h.log
    ? (v: number): number => (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))
    : (v: number): number => (v - lo) / (hi - lo || 1);
  const xOf = (v: number): number => LEFT + Math.min(1, Math.max(0, f(v))) * plotW;
  const y1 = height - AXIS;
  const peak = Math.max(1, ...counts);
  ctx.clearRect(0, 0, width, height);
  ctx.font = '11px sans-serif';
  ctx.fillStyle = text;
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  ctx.fillText(`Call durations: ${h.n} calls${h.log ? ' (log scale)' : ''}`, LEFT < 100 ? 4 : LEFT, 2);
  ctx.textAlign = 'right';
  ctx.fillText(String(peak), LEFT - 6, top);
  ctx.fillStyle = BAR_COLOUR;
  counts.forEach((c, k) => {
    if (c) {
      const xa = xOf(edges[k]);
      const xb = xOf(edges[k + 1]);
      const bh = Math.max(2, ((y1 - top) * c) / peak);
      ctx.fillRect(xa, y1 - bh, Math.max(1, xb - xa - 1), bh);
    }
  });
  ctx.fillStyle = '#999999';
  ctx.fillRect(LEFT, y1, plotW, 1);
  ctx.fillStyle = text;
  ctx.textAlign = 'center';
  const axis = h.log ? logTicks(lo, hi) : ticks(lo, hi, 5);
  let free = -Infinity; // a tick's label is left out where it would overlap the last one
  for (const v of axis) {
    const label = seconds(v);
    const half = ctx.measureText(label).width / 2;
    if (v >= lo && v <= hi && xOf(v) - half > free) {
      ctx.fillText(label, xOf(v), y1 + 5);
      free = xOf(v) + half + 6;
    }
  }
  // the median and p95: dashed lines, named in a legend at the top right
  const marks: Array<[string, number | undefined, string]> = [
    ['p95', h.p95, P95_COLOUR],
    ['median', h.median, text]
  ];
  let legendX = width - RIGHT;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'right';
  for (const [name, value, colour] of marks) {
    if (value === undefined) {
      continue;
    }
    const x = Math.round(xOf(value)) + 0.5;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, y1);
    ctx.moveTo(legendX - ctx.measureText(`${name} ${seconds(value)}`).width - 22, legendY + 6);
    ctx.lineTo(legendX - ctx.measureText(`${name} ${seconds(value)}`).width - 6, legendY + 6);
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = colour;
    const label = `${name} ${seconds(value)}`;
    ctx.fillText(label, legendX, legendY);
    legendX -= ctx.measureText(label).width + 32;
  }
}
