#!/usr/bin/env node
// The ubloop command. The CLI itself is TypeScript compiled to dist/ by `npm run build`.
import { main } from '../dist/lib/cli/main.js';

process.exitCode = await main(process.argv.slice(2));
