"""A throwaway self-signed certificate for ``localhost``, for a front end's TLS.

Made with the ``openssl`` command when it is installed, else with the
``cryptography`` package when that is; neither is a dependency of
runfcgi_compat, so the error says how to get one.
"""
import datetime
import shutil
import subprocess
from pathlib import Path

NAMES = ("localhost", "127.0.0.1")


class CertificateError(RuntimeError):
    """No way to make a certificate here; the message says what to install."""


def make_certificate(directory):
    """Write ``cert.pem`` and ``key.pem`` into ``directory``; return both paths."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        _with_openssl(openssl, cert, key)
    else:
        _with_cryptography(cert, key)
    key.chmod(0o600)
    return str(cert), str(key)


def _with_openssl(openssl, cert, key):
    done = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise CertificateError(f"openssl could not make a test certificate: "
                               f"{done.stderr.strip()}")


def _with_cryptography(cert, key):
    try:
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise CertificateError(
            "https=True needs a self-signed certificate: install the openssl command "
            "(Debian package openssl) or the Python package cryptography.") from None
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .sign(private, hashes.SHA256()))
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
