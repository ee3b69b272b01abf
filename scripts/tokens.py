"""scripts/tokens.py DIR [APP]: the benchmarks' 1,000 tokens, tok-000000..tok-000999, each a random
200-character system-user token (of APP when given): DIR/tokens.jsonl for `tokenvault import --format
jsonl`, and DIR/names.txt for tvload's --names-file. Used by bench.sh, soak.sh and ab.sh."""
import secrets, sys

d = sys.argv[1]
app = ',"app":"%s"' % sys.argv[2] if len(sys.argv) > 2 else ""
with open(d + "/tokens.jsonl", "w") as f, open(d + "/names.txt", "w") as n:
    for i in range(1000):
        f.write('{"name":"tok-%06d","token":"EAAB%s","kind":"system_user"%s}\n' % (i, secrets.token_urlsafe(150), app))
        n.write("tok-%06d\n" % i)
