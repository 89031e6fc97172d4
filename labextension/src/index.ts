import { IJupyterWidgetRegistry } from '@jupyter-widgets/base';
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { CallGridModel, CallGridView } from './callgrid';
import { LogViewModel, LogViewView } from './logview';
import { MODULE_NAME, MODULE_VERSION } from './version';

/**
 * Registers sif_magic's widget module (CallGrid, LogView) with the
 * Jupyter widget manager of JupyterLab 4 and Notebook 7.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'sif-magic:widgets',
  description: 'Per-call state grid and log viewer for sif_magic jobs.',
  requires: [IJupyterWidgetRegistry],
  autoStart: true,
  activate: (_app: JupyterFrontEnd, registry: IJupyterWidgetRegistry): void => {
    registry.registerWidget({
      name: MODULE_NAME,
      version: MODULE_VERSION,
      exports: { CallGridModel, CallGridView, LogViewModel, LogViewView }
    });
  }
};

export default plugin;
