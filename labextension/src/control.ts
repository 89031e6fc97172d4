/**
 * Requests to the kernel on its control channel (`sif_magic_request`, answered
 * by sif_magic/display/panel.py on ipykernel's control thread): the side panel,
 * the timeline's zoom and the clicks and hovers in the widgets under a cell use
 * them, so they work while a blocking cell holds the shell channel, where widget
 * messages would wait for the cell to end.
 */
import { WidgetModel } from '@jupyter-widgets/base';
import { PageConfig } from '@jupyterlab/coreutils';
import { Kernel, KernelMessage } from '@jupyterlab/services';

export const REQUEST = 'sif_magic_request';
const TIMEOUT_MS = 4000;

/**
 * Control requests whose busy/idle the notebook's kernel status leaves out: ours,
 * and the subshell requests JupyterLab itself sends when a widget's comm opens
 * (comms over subshells): ipykernel reports each control request busy then idle,
 * so a grid shown by a running cell made its notebook look idle.
 */
const UNTRACKED = [REQUEST, 'create_subshell_request', 'delete_subshell_request', 'list_subshell_request'];

/** Keep the kernel status of those requests out of the notebook's status. */
export function untrackRequests(): void {
  let untracked: string[] = [];
  try {
    untracked = JSON.parse(PageConfig.getOption('untracked_message_types') || '[]');
  } catch {
    untracked = [];
  }
  const missing = UNTRACKED.filter(type => !untracked.includes(type));
  if (missing.length) {
    PageConfig.setOption('untracked_message_types', JSON.stringify([...untracked, ...missing]));
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

/**
 * Kernels that left a request unanswered, and when: for RETRY_AFTER_MS their
 * widgets' clicks go as widget messages at once (no 4 s wait each); then the
 * control route is tried again (a kernel restarted and sif_magic loaded again, a
 * control thread that was busy with a slow request).
 */
const unanswered = new WeakMap<Kernel.IKernelConnection, number>();
const RETRY_AFTER_MS = 30000;

function silent(kernel: Kernel.IKernelConnection): boolean {
  const since = unanswered.get(kernel);
  if (since === undefined) {
    return false;
  }
  if (Date.now() - since >= RETRY_AFTER_MS) {
    unanswered.delete(kernel);
    return false;
  }
  return true;
}

/**
 * Tell the kernel about a click (or ask about a hover) in the widget of `model`
 * on the control channel (sif_magic/widgets/_control.py answers, by the
 * widget's model id). Resolves with the reply, or with null where that route is
 * not there: a widget the kernel did not make `via_control`, no kernel, one that
 * did not answer, or an error reply. On null the caller sends its widget
 * message, which the kernel gets when it is not running a cell.
 */
export async function askWidget(model: WidgetModel, content: Record<string, unknown>): Promise<any> {
  const kernel: Kernel.IKernelConnection | undefined = (model.widget_manager as any).kernel;
  if (!model.get('via_control') || !kernel || silent(kernel)) {
    return null;
  }
  try {
    const reply = await ask(kernel, { ...content, widget: model.model_id });
    return reply && !reply.error ? reply : null;
  } catch {
    unanswered.set(kernel, Date.now());
    return null;
  }
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
