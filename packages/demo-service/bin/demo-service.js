#!/usr/bin/env node
// The demo service from its TypeScript sources (tools/scripts/register-ts.js), for the
// workspace: `node packages/demo-service/bin/demo-service.js`. The process is the service
// itself, so SIGTERM reaches it. In a container, build and run `node packages/demo-service/dist/main.js`.
// eslint-disable-next-line @nx/enforce-module-boundaries
require('../../../tools/scripts/register-ts.js').register();
require('../src/main.ts')
  .main()
  .catch((error) => {
    process.stderr.write(`demo-service: ${error.stack ?? error}\n`);
    process.exit(1);
  });
