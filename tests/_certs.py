"""A throw-away CA-less self-signed certificate for TLS tests: made with the
`cryptography` package when it is importable, else CPython's test certs."""

import atexit
import datetime
import functools
import os
import shutil
import ssl
import tempfile


@functools.lru_cache(maxsize=None)
def cert_files():
    """(certfile, keyfile) for a self-signed cert valid for localhost/127.0.0.1."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        import test
        base = os.path.join(os.path.dirname(test.__file__), "certdata")
        if not os.path.isdir(base):
            base = os.path.dirname(test.__file__)
        path = os.path.join(base, "keycert.pem")
        return path, path
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tempfile.mkdtemp(prefix="ferroloop-certs-")
    atexit.register(shutil.rmtree, d, True)
    certfile = os.path.join(d, "cert.pem")
    keyfile = os.path.join(d, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return certfile, keyfile


def server_context():
    certfile, keyfile = cert_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_context(trusted=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trusted:
        ctx.load_verify_locations(cert_files()[0])
    return ctx
