#!/usr/bin/env bash
# Fails when a tracked file is a compiled executable or an object file (ELF,
# Mach-O, PE, a Go archive) or is larger than 1 MiB outside a testdata/
# directory. A 31.8 MB dmqd binary was committed once and is still most of
# the history's size; this check keeps it from happening again.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=$((1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue # deleted in the working tree, not yet staged
  size=$(wc -c <"$f" | tr -d " ")
  case "/$f" in
  */testdata/*) ;;
  *)
    if [ "$size" -gt "$limit" ]; then
      echo "tracked file larger than 1 MiB outside testdata/: $f ($size bytes)" >&2
      bad=1
    fi
    ;;
  esac
  magic=$(head -c 8 -- "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
  7f454c46*) kind="an ELF executable or object" ;;
  feedface* | feedfacf* | cefaedfe* | cffaedfe* | cafebabe*) kind="a Mach-O executable" ;;
  4d5a*) kind="a PE (Windows) executable" ;;
  213c617263683e0a) kind="an ar archive (.a)" ;;
  *) kind="" ;;
  esac
  if [ -n "$kind" ]; then
    echo "tracked file is $kind: $f" >&2
    bad=1
  fi
done < <(git ls-files -z)
if [ "$bad" -ne 0 ]; then
  echo "remove these files from the index (git rm --cached) and add their paths to .gitignore" >&2
  exit 1
fi
echo "tracked files: no executables, none over 1 MiB outside testdata/"
