"""The OSS test server itself: the real oss2 client works against it, signed V1 or V4, and bad signatures fail."""

import oss2
import pytest

from tests.support.oss_server import OssServer

AK, SK, BUCKET, REGION = "test-ak", "test-sk", "learn-wave", "cn-beijing"


@pytest.fixture(scope="module")
def server():
    with OssServer(access_key_id=AK, access_key_secret=SK, bucket=BUCKET, region=REGION) as oss:
        yield oss


def bucket(server, version: int, secret: str = SK) -> oss2.Bucket:
    if version == 4:
        return oss2.Bucket(oss2.AuthV4(AK, secret), server.endpoint, BUCKET, region=REGION, connect_timeout=5)
    return oss2.Bucket(oss2.Auth(AK, secret), server.endpoint, BUCKET, connect_timeout=5)


@pytest.mark.parametrize("version", [1, 4])
def test_the_real_client_round_trips(server, version):
    client = bucket(server, version)
    key = f"v{version}/声音/a b+c.pt"
    result = client.put_object(key, b"payload")  # oss2 checks the CRC-64 of the answer
    assert result.status == 200
    assert client.get_object(key).read() == b"payload"
    assert client.object_exists(key) and not client.object_exists(key + ".missing")
    assert client.get_object_meta(key).content_length == len(b"payload")
    for i in range(5):
        client.put_object(f"v{version}/list/{i}.pt", b"x")
    keys = [o.key for o in oss2.ObjectIteratorV2(client, prefix=f"v{version}/list/", max_keys=2)]
    assert keys == [f"v{version}/list/{i}.pt" for i in range(5)]
    assert [o.key for o in oss2.ObjectIterator(client, prefix=f"v{version}/list/", max_keys=2)] == keys
    client.delete_object(key)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        client.get_object(key)


@pytest.mark.parametrize("version", [1, 4])
def test_a_wrong_secret_is_rejected(server, version):
    server.put("guarded.pt", b"secret")
    wrong = bucket(server, version, secret="not-the-secret")
    with pytest.raises(oss2.exceptions.ServerError) as failure:
        wrong.get_object("guarded.pt")
    assert failure.value.status == 403 and failure.value.code == "SignatureDoesNotMatch"
    with pytest.raises(oss2.exceptions.ServerError):
        wrong.put_object("guarded.pt", b"overwritten")
    assert server.get("guarded.pt") == b"secret"
