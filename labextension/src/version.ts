/**
 * The module name and version the Python widgets ask for
 * (`_model_module = "sif-magic"`, `_model_module_version = "^0.1.0"`).
 * Kept equal to package.json's name and version (tests/test_widgets.py checks).
 */
export const MODULE_NAME = 'sif-magic';
export const MODULE_VERSION = '0.1.0';
