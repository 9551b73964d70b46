import { defineConfig } from 'drizzle-kit'

/** The PostgreSQL migrations (`npm run db:generate:pg`): the same tables as the SQLite ones, in ./migrations/pg. */
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/store/pg/schema.ts',
  out: './migrations/pg',
})
