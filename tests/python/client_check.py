#!/usr/bin/env python3
"""A zsc client in Python, generated from proto/ with grpcio-tools, as a Python team would.

Creates an org and its administrator, generates a key, validates it, then regenerates it while
following the revocation stream, and checks the old key is refused. Run by
tests/integration/python.rs against a live server; exits non-zero on any mismatch.
"""

import argparse
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOS = ["zsc/v1/types.proto", "zsc/v1/user_service.proto", "zsc/v1/key_service.proto", "zsc/v1/access_service.proto"]


def generate(out: str) -> None:
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{ROOT}/proto", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()

    generate(tempfile.mkdtemp(prefix="zsc-python-"))
    from zsc.v1 import key_service_pb2 as keys_pb, key_service_pb2_grpc as keys_grpc
    from zsc.v1 import types_pb2 as types
    from zsc.v1 import user_service_pb2 as users_pb, user_service_pb2_grpc as users_grpc

    auth = [("authorization", f"Bearer {args.token}")]
    channel = grpc.insecure_channel(args.addr)
    users = users_grpc.UserServiceStub(channel)
    keys = keys_grpc.KeyServiceStub(channel)

    org = users.CreateOrg(users_pb.CreateOrgRequest(name="Python Org", edition=types.EDITION_STANDARD), metadata=auth)
    users.CreateUser(
        users_pb.CreateUserRequest(
            org_id=org.org_id, email="lin@python.example", display_name="Lin", profile=types.PROFILE_ADMINISTRATOR
        ),
        metadata=auth,
    )
    generated = keys.GenerateKey(keys_pb.GenerateKeyRequest(org_id=org.org_id, actor_email="lin@python.example"), metadata=auth)
    valid = keys.ValidateKey(keys_pb.ValidateKeyRequest(email="LIN@python.example", key=generated.key), metadata=auth)
    assert valid.org.org_id == org.org_id and valid.key_id == generated.info.key_id, valid
    print("validated", valid.key_id, "for org", valid.org.name)

    # Follow the revocation stream from the head, then regenerate the key.
    stream = keys.WatchRevocations(keys_pb.WatchRevocationsRequest(), metadata=auth, timeout=20)
    first = next(stream)
    assert first.WhichOneof("event") == "checkpoint", first
    keys.RegenerateKey(keys_pb.RegenerateKeyRequest(org_id=org.org_id, actor_email="lin@python.example"), metadata=auth)
    for message in stream:
        if message.WhichOneof("event") == "revocation":
            event = message.revocation
            assert event.key_id == generated.info.key_id, event
            assert event.reason == types.REVOCATION_REASON_REGENERATED, event
            print("revocation", event.sequence, event.key_id, types.RevocationReason.Name(event.reason))
            break
    stream.cancel()

    try:
        keys.ValidateKey(keys_pb.ValidateKeyRequest(email="lin@python.example", key=generated.key), metadata=auth)
        sys.exit("the old key still validates")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        assert error.details() == "invalid email or key", error.details()
    print("python client ok")


if __name__ == "__main__":
    main()
