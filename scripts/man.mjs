// Writes man/cowstack.1 from the built program's command definitions (npm run man; npm run build runs it).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildProgram } from '../dist/cli/main.js';
import { commandTree } from '../dist/cli/commandTree.js';
import { manPage } from '../dist/cli/manPage.js';
import { VERSION } from '../dist/cli/version.js';

const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'man', 'cowstack.1');
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, manPage(commandTree(buildProgram()), VERSION));
