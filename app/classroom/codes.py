"""Join codes a class can read off a projector, and the teacher's secret.

Codes use letters and digits that cannot be mistaken for one another (no 0/O, 1/l/I, 5/S,
2/Z, 8/B): 6 characters from 24 give 191 million codes, so that guessing a live one, at the one
miss a second a client is allowed (app/classroom/limits.py), takes weeks, not minutes (the
README shows the arithmetic). The secret is kept only as its hash, so a stored session does not
hand out the teacher's controls.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ALPHABET = "ACDEFGHJKMNPQRTUVWXY3467"
CODE_LENGTH = 6
EXAMPLE = "ACD34X"
CODE = re.compile(f"[{ALPHABET}]{{{CODE_LENGTH}}}")


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normal_code(text: str) -> str | None:
    """A code as a person types it (any case, spaces around) in its canonical form, or None if it is not one."""
    code = text.strip().upper()
    return code if CODE.fullmatch(code) else None


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str | None, stored_hash: str) -> bool:
    return bool(secret) and hmac.compare_digest(secret_hash(secret), stored_hash)


def key_matches(given: str, key: str) -> bool:
    """The teacher key (DEEPDIVE_TEACHER_KEY), compared in constant time."""
    return hmac.compare_digest(given.strip().encode(), key.encode())


def new_student_id() -> str:
    return secrets.token_urlsafe(12)
