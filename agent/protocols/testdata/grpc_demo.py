import sys, time, grpc
from concurrent import futures
PORT = 28551
def say_hello(req, ctx):
    return b"hello " + req
def list_items(req, ctx):
    for i in range(3):
        yield b"item-%d" % i
def lookup(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such user: bob \u00e9")
if sys.argv[1] == "server":
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
        "ListItems": grpc.unary_stream_rpc_method_handler(list_items),
        "Lookup": grpc.unary_unary_rpc_method_handler(lookup),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.v1.Greeter", handlers),))
    server.add_insecure_port("127.0.0.1:%d" % PORT)
    server.start()
    server.wait_for_termination(timeout=60)
else:
    with grpc.insecure_channel("127.0.0.1:%d" % PORT) as ch:
        print(ch.unary_unary("/demo.v1.Greeter/SayHello")(b"world", timeout=5))
        print(list(ch.unary_stream("/demo.v1.Greeter/ListItems")(b"", timeout=5)))
        try:
            ch.unary_unary("/demo.v1.Greeter/Lookup")(b"bob", timeout=5)
        except grpc.RpcError as e:
            print(e.code(), e.details())
