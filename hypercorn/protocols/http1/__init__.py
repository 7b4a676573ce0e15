"""HTTP/1.1: the strict front door, the parser contract, the h11 and httptools tokenisers,
and the connection.

=========================  ============================================================
``parser.py``              the ``H1Parser`` contract, ``RequestHead``, the h11 reference
``judge.py``               judging a head / trailer section against RFC 9112 (the verdicts)
``frontdoor.py``           ``StrictH1Parser``: framing, de-chunking, pipelining, head memo
``fieldlines.py``          new heads judged and tokenised line by line (memo of lines)
``h11_tokeniser.py``       heads split by h11
``httptools_tokeniser.py`` heads split by llhttp (optional ``httptools``)
``selection.py``           ``make_parser`` for Config ``http1_parser``
``connection.py``          ``H1Connection``: keep-alive, pipelining, deadlines, upgrades
``response.py``            ``ResponseWriter``: heads, framing, chunks, trailers, errors
=========================  ============================================================
"""
