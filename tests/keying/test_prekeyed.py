"""Pre-keyed derivation (pure): both gateways compute the same SAs, per call and direction."""

from ipsecrtp.keying.derive import derive, hkdf


def test_hkdf_matches_rfc5869_test_case_1():
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = hkdf(ikm, salt, info, 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_both_gateways_derive_the_same_sas_and_calls_differ():
    secret = b"s" * 32
    a = derive(secret, "call-1@x", 0, "198.51.100.1", "198.51.100.2")
    b = derive(secret, "call-1@x", 0, "198.51.100.2", "198.51.100.1")
    assert a == b and len(a) == 2
    assert {(k.src, k.dst) for k in a} == {("198.51.100.1", "198.51.100.2"), ("198.51.100.2", "198.51.100.1")}
    assert a[0].spi != a[1].spi and a[0].enc != a[1].enc
    assert all(k.spi >= 0x10000000 and len(k.enc) == 16 and len(k.auth) == 32 for k in a)
    other = derive(secret, "call-2@x", 0, "198.51.100.1", "198.51.100.2")
    rekeyed = derive(secret, "call-1@x", 1, "198.51.100.1", "198.51.100.2")
    assert not ({k.spi for k in other} & {k.spi for k in a}) and rekeyed[0].enc != a[0].enc
    assert derive(b"t" * 32, "call-1@x", 0, "198.51.100.1", "198.51.100.2")[0].enc != a[0].enc
    assert a[0].enc.hex() not in repr(a) and a[0].auth.hex() not in repr(a)
