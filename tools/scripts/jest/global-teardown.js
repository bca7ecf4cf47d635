const { register } = require('../register-ts.js');

module.exports = async function globalTeardown() {
  const state = globalThis.__USAGEKIT_TEST_SERVER__;
  if (!state) return;
  const restore = register();
  try {
    const { dropTemplate } = require('@usagekit/testing');
    await dropTemplate(state.server.url, state.template).catch(() => undefined);
  } finally {
    restore();
    await state.server.stop();
  }
};
