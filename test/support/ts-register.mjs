// Lets a child process run the TypeScript sources directly: node --import ./test/support/ts-register.mjs file.ts
import { register } from 'node:module';
import 'reflect-metadata';

register('./ts-hooks.mjs', import.meta.url);
