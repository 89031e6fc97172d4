/**
 * Call states: one byte per call, the same codes as sif_magic.protocol.STATE_NAMES.
 */
export const STATE_NAMES: readonly string[] = [
  'queued',
  'running',
  'done',
  'failed',
  'cancelled',
  'retrying',
  'lost',
  'finishing'
];

/** CSS colours per state code (index = code): the values of sif_magic.display.COLOURS
 * (tests/test_widgets.py compares them). */
export const STATE_COLOURS: readonly string[] = [
  '#9e9e9e', // queued: grey
  '#1e88e5', // running: blue
  '#43a047', // done: green
  '#e53935', // failed: red
  '#616161', // cancelled: dark grey
  '#fb8c00', // retrying: orange
  '#8e24aa', // lost: purple
  '#81c784' // finishing: light green (ended on its worker, result on its way)
];

const UNKNOWN_COLOUR = '#000000';

export function stateName(code: number): string {
  return code < STATE_NAMES.length ? STATE_NAMES[code] : `state ${code}`;
}

/** Colours as little-endian RGBA words, ready for a Uint32Array over ImageData. */
export function packedColours(): Uint32Array {
  const packed = new Uint32Array(256);
  for (let code = 0; code < 256; code++) {
    const hex = code < STATE_COLOURS.length ? STATE_COLOURS[code] : UNKNOWN_COLOUR;
    const r = parseInt(hex.slice(1, 3), 16);
    const g = parseInt(hex.slice(3, 5), 16);
    const b = parseInt(hex.slice(5, 7), 16);
    packed[code] = ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }
  return packed;
}

/** Inflate a zlib stream (Python's zlib.compress) with the browser's DecompressionStream. */
export async function inflate(data: Uint8Array): Promise<Uint8Array> {
  if (data.byteLength === 0) {
    return new Uint8Array(0);
  }
  if (typeof DecompressionStream === 'undefined') {
    throw new Error('this browser has no DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+)');
  }
  const copy = new Uint8Array(data.byteLength);
  copy.set(data);
  const stream = new Blob([copy.buffer]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** A Uint8Array over the bytes of a binary trait as ipywidgets delivers it. */
export function bytesOf(value: unknown): Uint8Array {
  if (value instanceof DataView) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) {
    return new Uint8Array(value);
  }
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  return new Uint8Array(0);
}
