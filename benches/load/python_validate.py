#!/usr/bin/env python3
"""ValidateKey from a Python grpcio client, one call at a time (the load bench's row 2).

Usage: python_validate.py HOST:PORT TOKEN REQUEST_FILE CALLS
REQUEST_FILE holds a serialized zsc.v1.ValidateKeyRequest (no gRPC prefix): the call sends it
as is, so no generated stubs are needed. Prints "p50_ns p99_ns calls failed" on one line.
"""
import sys
import time

import grpc


def main():
    target, token, request_file, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    request = open(request_file, "rb").read()
    channel = grpc.insecure_channel(target)
    validate = channel.unary_unary("/zsc.v1.KeyService/ValidateKey")
    metadata = (("authorization", "Bearer " + token),)
    failed = 0
    for _ in range(200):  # warm-up: the connection, and both ends' first calls
        validate(request, metadata=metadata)
    took = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        try:
            validate(request, metadata=metadata)
        except grpc.RpcError:
            failed += 1
        took.append(time.perf_counter_ns() - started)
    took.sort()
    p99 = took[min(len(took) - 1, -(-len(took) * 99 // 100) - 1)]
    print(took[len(took) // 2], p99, calls, failed)


if __name__ == "__main__":
    main()
