"""Test messages for the parser, one per case of RFC 4475 ("SIP Torture Test Messages").

Each message exercises the trick its RFC 4475 section names (the section number and the RFC's
short name are kept so that a failure points at the case), written for this project with
documentation addresses. ``VALID`` maps a name to the message and the values it must parse to;
``INVALID`` maps a name to the message and a word of the reason it must be rejected with.
RFC 4475 §3.2/§3.3 cases are syntactically valid and semantically odd: a passive observer
parses them; the few that make the message ambiguous to frame or to attribute to a dialog
(several Content-Length / Call-ID / To values) are rejected.
"""

from __future__ import annotations


def crlf(*lines: str, body: bytes = b"", length: int | None = None, raw_tail: bytes = b"") -> bytes:
    """Join header lines with CRLF; ``{len}`` in a line becomes the body length."""
    n = len(body) if length is None else length
    head = "\r\n".join(line.replace("{len}", str(n)) for line in lines) + "\r\n\r\n"
    return head.encode("utf-8") + body + raw_tail


SDP = (b"v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
       b"t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n")

VALID: dict[str, tuple[bytes, dict]] = {}
INVALID: dict[str, tuple[bytes, str]] = {}

# 3.1.1.1 wsinv: whitespace everywhere it may be, folding, odd case, leading zeros
VALID["3.1.1.1-wsinv"] = (crlf(
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
    "TO :",
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
    "  ;",
    "  tag = 98asjd8",
    "MaX-fOrWaRdS: 0068",
    "Call-ID: wsinv.ndaksdj@192.0.2.1",
    "Content-Length   : {len}",
    "cseq: 0009",
    "  INVITE",
    "Via  : SIP  /   2.0",
    " /UDP",
    "    192.0.2.2;branch=390skdjuw",
    "s :",
    "NewFangledHeader:   newfangled value",
    " continued newfangled value",
    "UnknownHeaderWithUnusualValue: ;;,,;;,;",
    "Content-Type: application/sdp",
    "Route:",
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
    "  branch  =   z9hG4bK9ikj8  ,",
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
    " z9hG4bK30239",
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
    "      newvalue ;",
    "  secondparam ; q = 0.33",
    body=SDP), {
        "method": "INVITE", "call_id": "wsinv.ndaksdj@192.0.2.1", "cseq": (9, "INVITE"),
        "to_tag": "1918181833n", "from_tag": "98asjd8",
        "vias": [("UDP", "192.0.2.2", None, "390skdjuw"), ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
                 ("UDP", "192.168.255.111", None, "z9hG4bK30239")],
        "headers": {"max-forwards": "0068", "newfangledheader": "newfangled value continued newfangled value",
                    "subject": ""},
        "contacts": 1, "sdp_streams": 2,
    })

# 3.1.1.2 intmeth: every token character in the method, odd URI user part, NUL/BEL/DEL escaped in quotes
_INTMETH = "!interesting-Method0123456789_*+`.%indeed'~"
VALID["3.1.1.2-intmeth"] = (crlf(
    f"{_INTMETH} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
    "(doesn't-it)@example.com SIP/2.0",
    "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
    'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>',
    "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
    '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439";tag=_token~1\'+`*%!-.',
    "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
    f"CSeq: 139122385 {_INTMETH}",
    "Max-Forwards: 255",
    "extensionHeader-!.%*+_`'~: \ufeff\u5927\u505c\u96fb",
    "Content-Length: 0",
), {
    "method": _INTMETH, "cseq": (139122385, _INTMETH.upper()), "from_tag": "_token~1'+`*%!-.",
    "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
    "vias": [("TCP", "host1.example.com", None, "z9hG4bK-.!%66*_+`'~")],
    "headers": {"extensionheader-!.%*+_`'~": "\ufeff\u5927\u505c\u96fb"},
})

# 3.1.1.3 esc01: valid %-escapes in URIs and header values
VALID["3.1.1.3-esc01"] = (crlf(
    "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
    "To: sip:%75se%72@example.com",
    "From: <sip:I%20have%20spaces@example.net>;tag=938",
    "Max-Forwards: 87",
    "i: esc01.239409asdfakjkn23onasd0-3234",
    "CSeq: 234234 INVITE",
    "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw",
    "C: application/sdp",
    "Contact:",
    "  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
    "Content-Length: {len}",
    body=SDP), {"uri": "sip:sips%3Auser%40example.com@example.net", "from_tag": "938", "to_tag": None,
                "call_id": "esc01.239409asdfakjkn23onasd0-3234", "sdp_streams": 2, "contacts": 1})

# 3.1.1.4 escnull: %00 inside URIs
VALID["3.1.1.4-escnull"] = (crlf(
    "REGISTER sip:example.com SIP/2.0",
    "To: sip:null-%00-null@example.com",
    "From: sip:null-%00-null@example.com;tag=839923423",
    "Max-Forwards: 70",
    "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
    "CSeq: 14398234 REGISTER",
    "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw",
    "Contact: <sip:%00@host5.example.com>",
    "Contact: <sip:%00%00@host5.example.com>",
    "L:0",
), {"method": "REGISTER", "from_tag": "839923423", "contacts": 2, "body": b""})

# 3.1.1.5 esc02: '%' that is not an escape, in the method name (an unknown method)
VALID["3.1.1.5-esc02"] = (crlf(
    "RE%47IST%45R sip:registrar.example.com SIP/2.0",
    "To: \"%Z%45\" <sip:resource@example.com>",
    "From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23",
    "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
    "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234",
    "CSeq: 29344 RE%47IST%45R",
    "Max-Forwards: 70",
    "Contact: <sip:alias1@host1.example.com>",
    "C%6Fntact: <sip:alias2@host2.example.com>",
    "Contact: <sip:alias3@host3.example.com>",
    "l: 0",
), {"method": "RE%47IST%45R", "contacts": 2, "headers": {"c%6fntact": "<sip:alias2@host2.example.com>"}})

# 3.1.1.6 lwsdisp: no LWS between display name and '<'
VALID["3.1.1.6-lwsdisp"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0",
    "To: sip:user@example.com",
    "From: caller<sip:caller@example.com>;tag=323",
    "Max-Forwards: 70",
    "Call-ID: lwsdisp.1234abcd@funky.example.com",
    "CSeq: 60 OPTIONS",
    "Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw",
    "l: 0",
), {"method": "OPTIONS", "from_tag": "323"})

# 3.1.1.7 longreq: very long values everywhere
_LONG = "a" * 1500
VALID["3.1.1.7-longreq"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0",
    f'To: "I have a user name of {_LONG} lengths" <sip:user@example.com>',
    f"From: sip:caller@example.net;tag={'1' * 300}",
    f"Call-ID: longreq.{'one' * 300}@example.net",
    "CSeq: 3882340 INVITE",
    "Max-Forwards: 70",
    f"Unknown-{'Long' * 100}-Name: unknown-{'long' * 100}-value; unknown-{'long' * 100}-parameter-name ="
    f" unknown-{'long' * 100}-parameter-value",
    f"Via: SIP/2.0/TCP sip33.example.com;branch=z9hG4bK{'x' * 400}",
    "v: SIP/2.0/TCP sip32.example.com",
    *[f"V: SIP/2.0/TCP sip{i}.example.com" for i in range(31, 0, -1)],
    f"Contact: <sip:amazinglylongcallername{'x' * 400}@host5.example.net>",
    "Content-Type: application/sdp",
    "l: {len}",
    body=SDP), {"from_tag": "1" * 300, "via_count": 33, "sdp_streams": 2})

# 3.1.1.8 dblreq: a second message after Content-Length in the same UDP datagram is ignored
_SECOND = crlf("INVITE sip:joe@example.com SIP/2.0", "t: sip:joe@example.com", "From: sip:caller@example.net;tag=141334",
               "Max-Forwards: 8", "Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15", "CSeq: 8 INVITE",
               "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234", "Content-Type: application/sdp",
               "Content-Length: {len}", body=SDP)
VALID["3.1.1.8-dblreq"] = (crlf(
    "REGISTER sip:example.com SIP/2.0",
    "To: sip:j.user@example.com",
    "From: sip:j.user@example.com;tag=43251j3j324",
    "Max-Forwards: 8",
    "I: dblreq.0ha0isndaksdj99sdfafnl3lk233412",
    "Contact: sip:j.user@host.example.com",
    "CSeq: 8 REGISTER",
    "Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492",
    "Content-Length: 0",
    raw_tail=_SECOND), {"method": "REGISTER", "body": b""})

# 3.1.1.9 semiuri: ';' inside the user part of the Request-URI
VALID["3.1.1.9-semiuri"] = (crlf(
    "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0",
    "To: sip:j_user@example.com",
    "From: sip:caller@example.org;tag=33242",
    "Max-Forwards: 3",
    "Call-ID: semiuri.0ha0isndaksdj",
    "CSeq: 8 OPTIONS",
    "Accept: application/sdp, application/pkcs7-mime,",
    "        multipart/mixed, multipart/signed,",
    "        message/sip, message/sipfrag",
    "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw",
    "l: 0",
), {"uri": "sip:user;par=u%40example.net@example.com", "accept": 6})

# 3.1.1.10 transports: unusual and unknown transports in Via
VALID["3.1.1.10-transports"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0",
    "To: sip:user@example.com",
    "From: <sip:caller@example.com>;tag=323",
    "Max-Forwards: 70",
    "Call-ID:  transports.kijh4akdnaqjkwendsasfdj",
    "Accept: application/sdp",
    "CSeq: 60 OPTIONS",
    "Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw",
    "Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
    "Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj",
    "Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
    "Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
    "l: 0",
), {"via_transports": ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]})

# 3.1.1.11 mpart01: multipart/mixed body with SDP and a binary part
_BOUNDARY = "7a9cbec02ceef655"
_MPART = (f"--{_BOUNDARY}\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nsome text\r\n"
          f"--{_BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n").encode() + SDP + \
    (f"\r\n--{_BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
     ).encode() + bytes(range(256)) + f"\r\n--{_BOUNDARY}--\r\n".encode()
VALID["3.1.1.11-mpart01"] = (crlf(
    "MESSAGE sip:kumiko@example.org SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK574e7a44",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=8ad6f5fc",
    "To: <sip:kumiko@example.org>",
    "Call-ID: mpart01.3b0d38c7",
    "CSeq: 1 MESSAGE",
    "Content-Type: multipart/mixed;boundary=" + _BOUNDARY,
    "Content-Length: {len}",
    body=_MPART), {"method": "MESSAGE", "sdp_streams": 2})

# 3.1.1.12 unreason: reason phrase with UTF-8 and odd characters
VALID["3.1.1.12-unreason"] = (crlf(
    "SIP/2.0 200 = 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e"
    " \u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435",
    "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
    "Call-ID: unreason.1234ksdfak3j2erwedfsASdf",
    "CSeq: 35 INVITE",
    "From: sip:user@example.com;tag=11141343",
    "To: sip:user@example.edu;tag=2229",
    "Content-Type: application/sdp",
    "Contact: <sip:user@host198.example.com>",
    "Content-Length: {len}",
    body=SDP), {"status": 200, "to_tag": "2229", "sdp_streams": 2})

# 3.1.1.13 noreason: empty reason phrase (the SP after the code is still there)
VALID["3.1.1.13-noreason"] = (crlf(
    "SIP/2.0 100 ",
    "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
    "Call-ID: noreason.asndj203insdf99223ndf",
    "CSeq: 35 INVITE",
    "From: <sip:user@example.com>;tag=39ansfi3",
    "To: <sip:user@example.edu>;tag=902jndnke3",
    "Content-Length: 0",
), {"status": 100, "reason": ""})

# --- invalid (RFC 4475 §3.1.2) -------------------------------------------------------------------

_BASE = ("Max-Forwards: 70", "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw")
INVALID["3.1.2.1-badinv01"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", "To: sip:j.user@example.com", "From: sip:caller@example.net;tag=134161461246",
    "Max-Forwards: 7", "Call-ID: badinv01.0ha0isndaksdjasdf3234nas", "CSeq: 8 INVITE",
    "Via: SIP/2.0/UDP 192.0.2.15;;,;,,", "Contact: \"Joe\" <sip:joe@example.org>;;;;",
    "Content-Length: {len}", "Content-Type: application/sdp", body=SDP), "via")

INVALID["3.1.2.2-clerr"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", *_BASE, "To: sip:j.user@example.com",
    "From: sip:caller@example.net;tag=93942939o2", "Contact: <sip:caller@hungry.example.net>",
    "Call-ID: clerr.0ha0isndaksdjweiafasdk3", "CSeq: 8 INVITE", "Content-Type: application/sdp",
    "Content-Length: 9999", body=SDP), "exceeds")

INVALID["3.1.2.3-ncl"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", *_BASE, "To: sip:j.user@example.com",
    "From: sip:caller@example.net;tag=32394234", "Call-ID: ncl.0ha0isndaksdj2193423r542w35",
    "CSeq: 0 INVITE", "Contact: <sip:caller@example53.example.net>", "Content-Type: application/sdp",
    "Content-Length: -999", body=SDP), "content-length")

INVALID["3.1.2.4-scalar02"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3",
    "To: <sip:user@example.com>", "From: <sip:user@example.com>;tag=239232jh3",
    "CSeq: 36893488147419103232 REGISTER", "Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32",
    "Max-Forwards: 300", "Expires: 1" + "0" * 60, "Contact: <sip:user@host129.example.com>;expires=280297596632815",
    "Content-Length: 0"), "cseq")

INVALID["3.1.2.5-scalarlg"] = (crlf(
    "SIP/2.0 503 Service Unavailable", "Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129",
    "To: <sip:user@example.com>", "From: <sip:other@example.net>;tag=2easdjfejw",
    "CSeq: 9292394834772304023312 OPTIONS", "Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r",
    "Retry-After: 949302838503028349304023988", "Warning: 1812 overture \"In Progress\"",
    "Content-Length: 0"), "cseq")

INVALID["3.1.2.6-quotbal"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", 'To: "Mr. J. User <sip:j.user@example.com>',
    "From: sip:caller@example.net;tag=93334", *_BASE, "Call-ID: quotbal.aksdj", "Contact: <sip:caller@host59.example.net>",
    "CSeq: 8 INVITE", "Content-Type: application/sdp", "Content-Length: {len}", body=SDP), "quoted")

INVALID["3.1.2.7-ltgtruri"] = (crlf(
    "INVITE <sip:user@example.com> SIP/2.0", "To: sip:user@example.com", "From: sip:caller@example.net;tag=39291",
    *_BASE, "Call-ID: ltgtruri.1@192.0.2.5", "CSeq: 1 INVITE", "Contact: <sip:caller@host5.example.net>",
    "Content-Type: application/sdp", "Content-Length: {len}", body=SDP), "scheme")

INVALID["3.1.2.8-lwsruri"] = (crlf(
    "INVITE sip:user@example.com; lr SIP/2.0", "To: sip:user@example.com;tag=3xfe-9921883-z9f",
    "From: sip:caller@example.net;tag=231413434", *_BASE, "Call-ID: lwsruri.asdfasdoeoi2323-asdfwrs",
    "CSeq: 2923239 INVITE", "Contact: <sip:caller@host5.example.net>", "Content-Type: application/sdp",
    "Content-Length: {len}", body=SDP), "request line")

INVALID["3.1.2.9-lwsstart"] = (crlf(
    "INVITE  sip:user@example.com  SIP/2.0", "To: sip:user@example.com;tag=3xfe-9921883-z9f",
    "From: sip:caller@example.net;tag=231413434", *_BASE, "Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com",
    "CSeq: 1893884 INVITE", "Contact: <sip:caller@host3.example.net>", "Content-Type: application/sdp",
    "Content-Length: {len}", body=SDP), "request line")

INVALID["3.1.2.10-trws"] = (crlf(
    "OPTIONS sip:remote-target@example.com SIP/2.0  ", *_BASE, "To: <sip:remote-target@example.com>",
    "From: <sip:local-resource@example.com>;tag=329429089", "Call-ID: trws.oicu34958239neffasdhr2345r",
    "Accept: application/sdp", "CSeq: 238923 OPTIONS", "Content-Length: 0"), "request line")

INVALID["3.1.2.11-escruri"] = (crlf(
    "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0", "To: sip:user@example.com",
    "From: sip:caller@example.net;tag=341518", *_BASE, "Contact: <sip:caller@host39923.example.net>",
    "Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5", "CSeq: 39234321 INVITE",
    "Content-Type: application/sdp", "Content-Length: {len}", body=SDP), "header components")

INVALID["3.1.2.12-baddate"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", "To: sip:user@example.com", "From: sip:caller@example.net;tag=2234923",
    *_BASE, "Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234", "CSeq: 1392934 INVITE",
    "Date: Fri, 01 Jan 2010 16:00:00 EST", "Contact: <sip:caller@host5.example.net>",
    "Content-Type: application/sdp", "Content-Length: {len}", body=SDP), "date")

INVALID["3.1.2.13-regbadct"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "To: sip:user@example.com", "From: sip:user@example.com;tag=998332",
    *_BASE, "Call-ID: regbadct.k345asrl3fdbv@10.0.0.1", "CSeq: 1 REGISTER",
    "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E", "l: 0"), "enclosed")

INVALID["3.1.2.14-badaspec"] = (crlf(
    "OPTIONS sip:user@example.org SIP/2.0", "Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234",
    "Max-Forwards: 70", "From: \"Bell, Alexander\" <sip:a.g.bell@example.com>;tag=433423",
    'To: "Watson, Thomas" < sip:t.watson@example.org >', "Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3",
    "Accept: application/sdp", "CSeq: 3923239 OPTIONS", "l: 0"), "whitespace")

INVALID["3.1.2.15-baddn"] = (crlf(
    "OPTIONS sip:t.watson@example.org SIP/2.0", "Via: SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw",
    "Max-Forwards: 70", "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
    "To: Watson, Thomas <sip:t.watson@example.org>", "Call-ID: baddn.31415@c.example.com",
    "Accept: application/sdp", "CSeq: 3923239 OPTIONS", "l: 0"), "display name")

INVALID["3.1.2.16-badvers"] = (crlf(
    "OPTIONS sip:t.watson@example.org SIP/7.0", "Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
    "Max-Forwards:     70", "From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe", "To:      T. Watson <sip:t.watson@example.org>",
    "Call-ID: badvers.31417@c.example.com", "CSeq:    1 OPTIONS", "l: 0"), "version")

INVALID["3.1.2.17-mismatch01"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0", "To: sip:j.user@example.com", "From: sip:caller@example.net;tag=34525",
    *_BASE, "Call-ID: mismatch01.dj0234sxdfl3", "CSeq: 8 INVITE", "Accept: application/sdp", "l: 0"), "does not match")

INVALID["3.1.2.18-mismatch02"] = (crlf(
    "NEWMETHOD sip:user@example.com SIP/2.0", "To: sip:j.user@example.com", "From: sip:caller@example.net;tag=34525",
    *_BASE, "Call-ID: mismatch02.dj0234sxdfl3", "CSeq: 8 INVITE", "Contact: <sip:caller@host.example.net>",
    "Content-Type: application/sdp", "l: {len}", body=SDP), "does not match")

INVALID["3.1.2.19-bigcode"] = (crlf(
    "SIP/2.0 4294967301 better not break the receiver", "Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe",
    "Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i", "CSeq: 353494 INVITE",
    "From: <sip:user@example.com>;tag=39ansfi3", "To: <sip:user@example.edu>;tag=902jndnke3",
    "Content-Length: 0", "Contact: <sip:user@host105.example.com>"), "status line")

# --- semantics (RFC 4475 §3.2-3.4): parsed, except where framing or dialog identity is ambiguous ---

VALID["3.2.1-badbranch"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0", "To: sip:user@example.com", "From: sip:caller@example.org;tag=33242",
    "Max-Forwards: 3", "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK", "Accept: application/sdp",
    "Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n", "CSeq: 8 OPTIONS", "l: 0"), {"vias": [("UDP", "192.0.2.1", None, "z9hG4bK")]})

INVALID["3.3.1-insuf"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.250;branch=z9hG4bKkdjuw",
    "Max-Forwards: 70", "Contact: <sip:caller@host5.example.net>", "Content-Type: application/sdp",
    "Content-Length: {len}", body=SDP), "missing")

VALID["3.3.2-unkscm"] = (crlf(
    "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0", "To: sip:user@example.com",
    "From: sip:caller@example.net;tag=384", *_BASE, "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34", "CSeq: 3923423 OPTIONS",
    "Content-Length: 0"), {"uri": "nobodyKnowsThisScheme:totallyopaquecontent"})

VALID["3.3.3-novelsc"] = (crlf(
    "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0", "To: sip:user@example.com", "From: sip:caller@example.net;tag=384",
    *_BASE, "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34", "CSeq: 3923423 OPTIONS", "Content-Length: 0"),
    {"uri": "soap.beep://192.0.2.103:3002"})

VALID["3.3.4-unksm2"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "To: isbn:2983792873", "From: <http://www.example.com>;tag=3234233",
    "Call-ID: unksm2.daksdj@hyphenated-host.example.com", "CSeq: 234902 REGISTER", "Max-Forwards: 70",
    "Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw", "Contact: <name:John_Smith>", "l: 0"), {"from_tag": "3234233"})

VALID["3.3.5-bext01"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0", "To: sip:j_user@example.com", "From: sip:caller@example.net;tag=242etr",
    "Max-Forwards: 6", "Call-ID: bext01.0ha0isndaksdj", "Require: nothingSupportsThis, nothingSupportsThisEither",
    "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis", "CSeq: 8 OPTIONS",
    "Via: SIP/2.0/TLS fold-and-staple.example.com;branch=z9hG4bKkdjuw", "Content-Length: 0"), {"require": 2})

VALID["3.3.6-invut"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", "Contact: <sip:caller@host5.example.net>", "To: sip:j.user@example.com",
    "From: sip:caller@example.net;tag=8392034", *_BASE, "Call-ID: invut.0ha0isndaksdjadsfij34n23d", "CSeq: 235448 INVITE",
    "Content-Type: application/unknownformat", "Content-Length: {len}", body=b"<audio> <pcmu port=\"443\"/> </audio>\r\n"),
    {"sdp_streams": None})

VALID["3.3.7-regaut01"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "To: sip:j.user@example.com", "From: sip:j.user@example.com;tag=87321hj23128",
    "Max-Forwards: 8", "Call-ID: regaut01.0ha0isndaksdj", "CSeq: 9338 REGISTER",
    "Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw", "Authorization: NoOneKnowsThisScheme opaque-data=here",
    "Content-Length:0"), {"method": "REGISTER"})

INVALID["3.3.8-multi01"] = (crlf(
    "INVITE sip:user@company.com SIP/2.0", "Contact: <sip:caller@host25.example.net>", *_BASE,
    "To: sip:user@example.com", "Call-ID: multi01.98asdh@192.0.2.1", "CSeq: 59 INVITE",
    "Call-ID: multi01.98asdh@192.0.2.2", "From: sip:caller@example.com;tag=3413415", "To: sip:user@example.com",
    "To: sip:other@example.net", "From: sip:caller@example.net;tag=2923420123", "Content-Type: application/sdp",
    "l: {len}", body=SDP), "more than one")

INVALID["3.3.9-mcl01"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0", "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423",
    "To: sip:user@example.com", "From: sip:other@example.net;tag=3923942", "Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf",
    "CSeq: 15932 OPTIONS", "Content-Length: 13", "Max-Forwards: 60", "Content-Length: 5",
    "Content-Type: text/plain", body=b"There's no way to know how many octets are supposed to be here.\r\n", length=13),
    "more than one content-length")

VALID["3.3.10-bcast"] = (crlf(
    "SIP/2.0 200 OK", "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923",
    "Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23", "Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf",
    "CSeq: 35 INVITE", "From: sip:user@example.com;tag=11141343", "To: sip:user@example.edu;tag=2229",
    "Content-Length: {len}", "Content-Type: application/sdp", "Contact: <sip:user@host28.example.com>", body=SDP),
    {"status": 200, "via_count": 2})

VALID["3.3.11-zeromf"] = (crlf(
    "OPTIONS sip:user@example.com SIP/2.0", "To: sip:user@example.com", "From: sip:caller@example.net;tag=3ghsd41",
    "Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas", "CSeq: 39234321 OPTIONS",
    "Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bKkdjuw2349i", "Max-Forwards: 0", "Content-Length: 0"),
    {"headers": {"max-forwards": "0"}})

VALID["3.3.12-cparam01"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw",
    "Max-Forwards: 70", "From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe", "To: sip:watson@example.com",
    "Call-ID: cparam01.70710@saturn.example.com", "CSeq: 2 REGISTER", "Contact: sip:+19725552222@gw1.example.net;unknownparam",
    "l: 0"), {"contacts": 1})

VALID["3.3.13-cparam02"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw",
    "Max-Forwards: 70", "From: sip:watson@example.com;tag=838293", "To: sip:watson@example.com",
    "Call-ID: cparam02.70710@saturn.example.com", "CSeq: 3 REGISTER", "Contact: <sip:+19725552222@gw1.example.net;unknownparam>",
    "l: 0"), {"from_tag": "838293"})

VALID["3.3.14-regescrt"] = (crlf(
    "REGISTER sip:example.com SIP/2.0", "To: sip:user@example.com", "From: sip:user@example.com;tag=8",
    "Max-Forwards: 70", "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw", "Call-ID: regescrt.k345asrl3fdbv@192.0.2.1",
    "CSeq: 14398234 REGISTER", "M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>", "L:0"), {"contacts": 1})

VALID["3.3.15-sdp01"] = (crlf(
    "INVITE sip:user@example.com SIP/2.0", "To: sip:j_user@example.com", "Contact: <sip:caller@host15.example.net>",
    "From: sip:caller@example.net;tag=234", "Max-Forwards: 5", "Call-ID: sdp01.ndaksdj9342dasdd",
    "Accept: text/nobodyKnowsThis", "CSeq: 8 INVITE", "Via: SIP/2.0/UDP 60.0.0.1;branch=z9hG4bKkdjuw",
    "Content-Length: {len}", "Content-Type: application/sdp", body=SDP), {"sdp_streams": 2})

VALID["3.4.1-inv2543"] = (crlf(
    "INVITE sip:UserB@example.com SIP/2.0", "Via: SIP/2.0/UDP iftgw.example.com", "From: <sip:+303555@example.com>",
    "To: <sip:+17005554321@example.com>", "Call-ID: inv2543.1717@ift.client.example.net", "CSeq: 1 INVITE",
    "Content-Type: application/sdp", body=SDP), {"from_tag": None, "vias": [("UDP", "iftgw.example.com", None, None)],
                                                 "sdp_streams": 2})
