/**
 * Requests to the kernel on its control channel (`sif_magic_request`, answered
 * by sif_magic/display/panel.py on ipykernel's control thread): the side panel
 * and the timeline's zoom use them, so they work while a blocking cell holds
 * the shell channel, where widget messages would wait for the cell to end.
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { Kernel, KernelMessage } from '@jupyterlab/services';

export const REQUEST = 'sif_magic_request';
const TIMEOUT_MS = 4000;

/** Keep the kernel status of the panel's requests out of the notebook's status. */
export function untrackRequests(): void {
  let untracked: string[] = [];
  try {
    untracked = JSON.parse(PageConfig.getOption('untracked_message_types') || '[]');
  } catch {
    untracked = [];
  }
  if (!untracked.includes(REQUEST)) {
    PageConfig.setOption('untracked_message_types', JSON.stringify([...untracked, REQUEST]));
  }
}

/** Ask the kernel on its control channel; resolves with the reply's content. */
export function ask(kernel: Kernel.IKernelConnection, content: Record<string, unknown>): Promise<any> {
  const msg = KernelMessage.createMessage({
    msgType: REQUEST as any,
    channel: 'control',
    session: kernel.clientId,
    username: kernel.username,
    content: content as any
  });
  const future = kernel.sendControlMessage(msg as any, true, true);
  return new Promise((resolve, reject) => {
    const timer = window.setTimeout(() => {
      future.dispose();
      reject(new Error('the kernel did not answer (is sif_magic loaded? %load_ext sif_magic)'));
    }, TIMEOUT_MS);
    future.onReply = (reply: any): void => {
      window.clearTimeout(timer);
      resolve(reply.content);
    };
  });
}

/** The bytes of a base64 string (the kernel's zlib tables travel so in JSON). */
export function b64bytes(text: string): Uint8Array {
  const raw = atob(text || '');
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) {
    out[i] = raw.charCodeAt(i);
  }
  return out;
}
