#!/usr/bin/env bash
# The flow tests again, on PostgreSQL (`npm run test:pg`): every broker the test harness starts
# gets a database of its own on the cluster TASKPASS_TEST_POSTGRES names (scripts/pg-cluster.sh
# start <dir> prints one). A test about SQLite itself is skipped there, saying why (sqliteOnly in
# test/harness.ts). Left out of this run, as they store nothing differently on PostgreSQL:
#   browser-*, dev-browser-flow  drive Chromium over the pages; what they store is the same flows
#                                the in-process tests cover
#   demo, quickstart, bench      run the demo, the README quick start and the bench as shipped
#                                (their own SQLite file or in-memory database, by design)
#   store-contract, pg-db, pg-schema, several-instances, pg-races, pg-migration-wait
#                                run on PostgreSQL in `npm test` already
#   migrations-upgrade           upgrades SQLite files from every earlier schema (PostgreSQL has one)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TASKPASS_TEST_POSTGRES:-}" ]; then
  echo "$0: TASKPASS_TEST_POSTGRES is not set (scripts/pg-cluster.sh start <dir> prints the URL to export)" >&2
  exit 2
fi
files=()
for f in test/*.test.ts; do
  case "$(basename "$f" .test.ts)" in
    browser-* | dev-browser-flow | demo | quickstart | bench | store-contract | pg-db | pg-schema | several-instances | pg-races | pg-migration-wait | migrations-upgrade) ;;
    *) files+=("$f") ;;
  esac
done
TASKPASS_TEST_DATABASE=postgres exec node --import tsx --test --test-concurrency=2 "$@" "${files[@]}"
