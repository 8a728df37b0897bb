# One guest boot of `cargo xtask bench` (xtask/src/bench/vm.rs): for each
# hook form in $FORMS, `kscope run --hook-form` while $N wget requests to a
# local httpd and $N /bin/true spawns run, then what the host parses:
#
#   @@form <form> kscope=<exit code> wget_failed=<n> u0=<uptime> u1=<uptime>
#   <kscope's first line: the sensors record>
#   <kscope's last summary record>
#   @@stderr
#   <the first lines of kscope's stderr>
#
# vm.rs puts these assignments in front of this file:
#   N               requests and spawns per pass
#   FORMS           the hook forms, in the order to run them
#   KSCOPE_DURATION kscope's --duration: only a bound, SIGINT stops it
#
# busybox --install -s puts httpd in /usr/sbin and wget in /usr/bin (not
# /bin): they are found through PATH.
: "${N:?}" "${FORMS:?}" "${KSCOPE_DURATION:?}"
mkdir -p /www
echo "kscope bench" > /www/index.html
httpd -f -p 127.0.0.1:8080 -h /www &
HTTPD=$!
P=0
for FORM in $FORMS; do
    P=$((P+1)); OUT=/tmp/$P-$FORM
    /usr/bin/kscope run --output json --hook-form $FORM --duration $KSCOPE_DURATION > $OUT.jsonl 2> $OUT.err &
    K=$!
    i=0
    until grep -q '"type":"sensors"' $OUT.jsonl 2>/dev/null; do
        kill -0 $K 2>/dev/null || break
        i=$((i+1)); [ $i -gt 600 ] && break
        sleep 0.2
    done
    U0=$(cut -d' ' -f1 /proc/uptime)
    i=0; FAILED=0
    while [ $i -lt $N ]; do wget -q -O /dev/null http://127.0.0.1:8080/ || FAILED=$((FAILED+1)); i=$((i+1)); done
    i=0; while [ $i -lt $N ]; do /bin/true; i=$((i+1)); done
    U1=$(cut -d' ' -f1 /proc/uptime)
    kill -INT $K 2>/dev/null; wait $K; KCODE=$?
    echo "@@form $FORM kscope=$KCODE wget_failed=$FAILED u0=$U0 u1=$U1"
    head -n 1 $OUT.jsonl
    grep '"type":"summary"' $OUT.jsonl | tail -n 1
    echo "@@stderr"
    head -n 20 $OUT.err
done
kill $HTTPD
