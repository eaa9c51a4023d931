import { main } from './cli/main.js';

main().then((code) => {
  process.exitCode = code;
});
