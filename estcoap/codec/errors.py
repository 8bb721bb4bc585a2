"""Codec errors: what was wrong with the bytes, said specifically."""


class CodecError(ValueError):
    """Bytes that do not decode to what was expected. The message is a short diagnostic."""


class Base64Error(CodecError):
    pass


class CsrError(CodecError):
    pass


class Pkcs7Error(CodecError):
    pass


class CsrAttrsError(CodecError):
    pass


class MultipartError(CodecError):
    pass
