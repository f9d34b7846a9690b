#!/usr/bin/env bash
# Run make targets one after another as the stages of `make test`, print each stage's wall time
# as it ends and a summary table at the end. Every stage runs even after a failure (so one run
# shows every problem); the exit status is 1 when any stage failed.
#   scripts/stages.sh TARGET...
set -uo pipefail
declare -a names=() results=() seconds=()
total_start=$(date +%s)
for target in "$@"; do
  start=$(date +%s)
  printf '\n==> stage %s: started %s\n' "$target" "$(date -u +%H:%M:%S)"
  if make --no-print-directory "$target"; then result=ok; else result=FAILED; fi
  took=$(( $(date +%s) - start ))
  printf '==> stage %s: %s in %d s\n' "$target" "$result" "$took"
  names+=("$target") results+=("$result") seconds+=("$took")
done
failed=0
printf '\n| stage | result | seconds |\n|---|---|--:|\n'
for i in "${!names[@]}"; do
  printf '| %s | %s | %d |\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
  [ "${results[$i]}" = ok ] || failed=1
done
printf '| total | %s | %d |\n' "$([ "$failed" = 0 ] && echo ok || echo FAILED)" "$(( $(date +%s) - total_start ))"
exit "$failed"
