//! Fixture streams through the framer, each fed whole, split at every offset, and
//! one byte at a time; all three must give the same events or error.

mod common;

use aviary_xmpp::{Event, Framer, Limits, StreamErrorCondition as C, StreamHeader, ns};
use common::{HEADER, Hook, no_hook, run_all_splits, xml};

#[derive(Debug)]
enum Exp {
    Open,
    El(&'static str),
    Close,
    Err(C),
}

fn check_with(input: &[u8], hook: Hook, expected: &[Exp]) {
    let got = run_all_splits(Limits::default(), input, hook);
    let summary: Vec<String> = got
        .iter()
        .map(|r| match r {
            Ok(Event::StreamOpen(_)) => "Open".to_owned(),
            Ok(Event::StreamClose) => "Close".to_owned(),
            Ok(ev) => xml(ev),
            Err(e) => format!("Err({:?})", e.condition),
        })
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|e| match e {
            Exp::Open => "Open".to_owned(),
            Exp::Close => "Close".to_owned(),
            Exp::El(s) => (*s).to_owned(),
            Exp::Err(c) => format!("Err({c:?})"),
        })
        .collect();
    assert_eq!(summary, want, "input: {}", String::from_utf8_lossy(input));
}

fn check(input: &str, expected: &[Exp]) {
    check_with(input.as_bytes(), no_hook, expected);
}

/// The header, then `body`.
fn stream(body: &str) -> String {
    format!("{HEADER}{body}")
}

/// Shorthand for "the header is fine, then this error".
fn err_after_header(body: &str, c: C) {
    check(&stream(body), &[Exp::Open, Exp::Err(c)]);
}

// ---- typical client streams ------------------------------------------------------

#[test]
fn rfc6120_4_7_header_with_xml_declaration() {
    let got = run_all_splits(Limits::default(), HEADER.as_bytes(), no_hook);
    assert_eq!(
        got,
        vec![Ok(Event::StreamOpen(StreamHeader {
            to: Some("im.example.com".into()),
            from: Some("juliet@im.example.com".into()),
            id: None,
            version: Some("1.0".into()),
            lang: Some("en".into()),
        }))]
    );
}

#[test]
fn rfc6120_4_7_header_without_declaration_after_white_space() {
    check(
        "\r\n  <stream:stream to='example.com' version=\"1.0\" xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'  >",
        &[Exp::Open],
    );
}

#[test]
fn rfc6120_4_8_other_stream_prefix_and_extra_declarations() {
    check(
        "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams' xmlns:x='urn:x' version='1.0'>\
         <s:features/><x:y/>\n</s:stream >",
        &[
            Exp::Open,
            Exp::El("<stream:features/>"),
            Exp::El("<y xmlns='urn:x'/>"),
            Exp::Close,
        ],
    );
}

#[test]
fn rfc6120_5_4_2_starttls() {
    check(
        &stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        &[
            Exp::Open,
            Exp::El("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
        ],
    );
}

#[test]
fn rfc6120_6_4_2_sasl_auth() {
    check(
        &stream(
            "<auth mechanism='SCRAM-SHA-1' xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
        ),
        &[
            Exp::Open,
            Exp::El(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1qdWxpZXQscj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQQ==</auth>",
            ),
        ],
    );
}

#[test]
fn rfc6120_8_message_with_nested_payloads_keepalives_and_close() {
    check(
        &stream(
            "\n<message from='juliet@im.example.com/balcony' id='ktx72v49' to='romeo@example.net' type='chat' xml:lang='en'>\
             <body>Art thou not Romeo, and a Montague?</body>\
             <thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>\
             <active xmlns='http://jabber.org/protocol/chatstates'/>\
             <request xmlns='urn:xmpp:receipts'/></message> \t\r\n \
             <presence/>\n\n</stream:stream>",
        ),
        &[
            Exp::Open,
            Exp::El(
                "<message from='juliet@im.example.com/balcony' id='ktx72v49' to='romeo@example.net' type='chat' xml:lang='en'>\
                 <body>Art thou not Romeo, and a Montague?</body>\
                 <thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>\
                 <active xmlns='http://jabber.org/protocol/chatstates'/>\
                 <request xmlns='urn:xmpp:receipts'/></message>",
            ),
            Exp::El("<presence/>"),
            Exp::Close,
        ],
    );
}

#[test]
fn rfc6120_8_iq_with_prefixed_payload_and_namespaced_attribute() {
    check(
        &stream(
            "<iq id='r1' type='get'><q:query xmlns:q='jabber:iq:roster' q:ver='v1' ver='v2'><q:item jid='a@b'/></q:query></iq>",
        ),
        &[
            Exp::Open,
            Exp::El(
                "<iq id='r1' type='get'><query xmlns='jabber:iq:roster' xmlns:ns0='jabber:iq:roster' ns0:ver='v1' ver='v2'><item jid='a@b'/></query></iq>",
            ),
        ],
    );
}

#[test]
fn rfc6120_11_6_multibyte_utf8_text_and_attributes() {
    check(
        &stream(
            "<presence><show>away</show><status xml:lang='zh'>在开会 😀 Ünïcödé ✓</status><priority>5</priority>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='ノード' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
        ),
        &[
            Exp::Open,
            Exp::El(
                "<presence><show>away</show><status xml:lang='zh'>在开会 😀 Ünïcödé ✓</status><priority>5</priority>\
                 <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='ノード' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
            ),
        ],
    );
}

#[test]
fn xml_2_7_cdata_sections_merge_with_text() {
    check(
        &stream(
            "<message><body>a <![CDATA[<b>bold</b> & ]] > ]]]]><![CDATA[>]]> z</body><x><![CDATA[]]></x></message>",
        ),
        &[
            Exp::Open,
            Exp::El(
                "<message><body>a &lt;b&gt;bold&lt;/b&gt; &amp; ]] &gt; ]]&gt; z</body><x/></message>",
            ),
        ],
    );
}

#[test]
fn xml_4_1_character_and_predefined_entity_references() {
    check(
        &stream(
            "<message id='&#x41;&amp;&#66;'><body>&#72;&#x65;llo &lt;&gt;&amp;&apos;&quot; &#x1F600;&#128512;</body></message>",
        ),
        &[
            Exp::Open,
            Exp::El("<message id='A&amp;B'><body>Hello &lt;&gt;&amp;'\" 😀😀</body></message>"),
        ],
    );
}

#[test]
fn xml_3_1_attribute_values_with_gt_and_other_quotes() {
    check(
        &stream("<message id=\"a'b>c/>\" type='x\"y>'><body>/></body></message>"),
        &[
            Exp::Open,
            Exp::El(
                "<message id='a&apos;b&gt;c/&gt;' type='x&quot;y&gt;'><body>/&gt;</body></message>",
            ),
        ],
    );
}

#[test]
fn xml_2_10_white_space_inside_stanzas_is_content() {
    check(
        &stream("<message>\n  <body> x </body>\r\n</message>"),
        &[
            Exp::Open,
            Exp::El("<message>\n  <body> x </body>\n</message>"),
        ],
    );
    check(
        &stream("<message\n><body\t></body\r\n></message >"),
        &[Exp::Open, Exp::El("<message><body/></message>")],
    );
}

#[test]
fn xml_3_3_3_attribute_white_space_is_normalised() {
    check(
        &stream("<message id='a\tb\nc\r\nd&#9;e'/>"),
        &[Exp::Open, Exp::El("<message id='a b c d&#x9;e'/>")],
    );
}

#[test]
fn rfc6120_4_4_self_closing_header_opens_and_closes() {
    check(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/><ignored/>",
        &[Exp::Open, Exp::Close],
    );
}

#[test]
fn rfc6120_4_4_nothing_after_close() {
    check(
        &stream("</stream:stream><message/>junk"),
        &[Exp::Open, Exp::Close],
    );
}

#[test]
fn rfc6120_4_6_1_keepalives_only() {
    check(&stream(" \n \n\t \r\n"), &[Exp::Open]);
}

fn restart_after_auth(ev: &Event, f: &mut Framer) {
    if matches!(ev, Event::Element(el) if el.is("auth", ns::SASL)) {
        f.restart();
    }
}

#[test]
fn rfc6120_6_4_6_restart_keeps_pipelined_bytes() {
    let input = stream(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>\n{}<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        HEADER.replace(
            "version='1.0' xml:lang",
            "version='1.0' id='second' xml:lang"
        )
    ));
    check_with(
        input.as_bytes(),
        restart_after_auth,
        &[
            Exp::Open,
            Exp::El(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABy</auth>",
            ),
            Exp::Open,
            Exp::El("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"),
        ],
    );
}

#[test]
fn rfc6120_6_4_6_without_restart_a_new_header_is_restricted() {
    err_after_header(HEADER, C::RestrictedXml);
}

// ---- errors --------------------------------------------------------------------

#[test]
fn rfc6120_11_1_comment_is_restricted() {
    err_after_header("<message><!-- hi --></message>", C::RestrictedXml);
    err_after_header("<!-- between stanzas -->", C::RestrictedXml);
    check(
        "<!-- before --><stream:stream/>",
        &[Exp::Err(C::RestrictedXml)],
    );
}

#[test]
fn rfc6120_11_1_processing_instruction_is_restricted() {
    err_after_header("<?pi data?>", C::RestrictedXml);
    err_after_header("<message><?pi?></message>", C::RestrictedXml);
    check(
        &format!("<?xml-stylesheet href='x'?>{HEADER}"),
        &[Exp::Err(C::RestrictedXml)],
    );
    check(
        &format!("<?xml version='1.0'?>{HEADER}"),
        &[Exp::Err(C::RestrictedXml)],
    );
}

#[test]
fn rfc6120_11_1_dtd_is_restricted() {
    check(
        &format!(
            "<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'y'>]>{}",
            &HEADER[21..]
        ),
        &[Exp::Err(C::RestrictedXml)],
    );
    check(
        "<!DOCTYPE stream SYSTEM 'http://x/y.dtd'>",
        &[Exp::Err(C::RestrictedXml)],
    );
    err_after_header("<!DOCTYPE x>", C::RestrictedXml);
    err_after_header("<message><!DOCTYPE x></message>", C::RestrictedXml);
}

#[test]
fn rfc6120_11_1_undeclared_entity_is_restricted() {
    err_after_header("<message><body>&nbsp;</body></message>", C::RestrictedXml);
    err_after_header("<message id='&foo;'/>", C::RestrictedXml);
}

#[test]
fn xml_4_1_character_reference_must_be_a_legal_char() {
    err_after_header("<message><body>&#0;</body></message>", C::NotWellFormed);
    err_after_header("<message><body>&#xFFFE;</body></message>", C::NotWellFormed);
    err_after_header("<message><body>&#xD800;</body></message>", C::NotWellFormed);
    err_after_header("<message id='&#x1;'/>", C::NotWellFormed);
}

#[test]
fn rfc6120_11_6_encoding_other_than_utf8_is_unsupported() {
    check(
        "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream/>",
        &[Exp::Err(C::UnsupportedEncoding)],
    );
}

#[test]
fn rfc6120_4_9_3_10_invalid_namespace() {
    check(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://example.com/streams'>",
        &[Exp::Err(C::InvalidNamespace)],
    );
    check(
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        &[Exp::Err(C::InvalidNamespace)],
    );
    check(
        "<stream xmlns='jabber:client'>",
        &[Exp::Err(C::InvalidNamespace)],
    );
}

#[test]
fn rfc6120_4_9_3_2_bad_namespace_prefix() {
    check(
        "<stream:stream xmlns='jabber:client'>",
        &[Exp::Err(C::BadNamespacePrefix)],
    );
    err_after_header("<message><foo:bar/></message>", C::BadNamespacePrefix);
    err_after_header("<message foo:bar='1'/>", C::BadNamespacePrefix);
}

#[test]
fn rfc6120_4_9_3_13_text_before_header_is_not_well_formed() {
    check("hello <stream:stream/>", &[Exp::Err(C::NotWellFormed)]);
    check("</stream:stream>", &[Exp::Err(C::NotWellFormed)]);
    check("<>", &[Exp::Err(C::NotWellFormed)]);
}

#[test]
fn rfc6120_4_9_3_1_text_between_stanzas_is_bad_format() {
    check(
        &stream("<presence/>hello"),
        &[Exp::Open, Exp::El("<presence/>"), Exp::Err(C::BadFormat)],
    );
    err_after_header("hello", C::BadFormat);
    err_after_header("&amp;", C::BadFormat);
    err_after_header("<![CDATA[ ]]>", C::BadFormat);
}

#[test]
fn rfc6120_4_9_3_13_mismatched_stream_end_tag() {
    err_after_header("</stream:foo>", C::NotWellFormed);
    err_after_header("</stream>", C::NotWellFormed);
}

#[test]
fn rfc6120_4_9_3_13_malformed_stanzas_are_not_well_formed() {
    for body in [
        "<message><body></message>",
        "<message></presence>",
        "<message><body>unclosed</stream:stream>",
        "<message id='1' id='2'/>",
        "<message id=1/>",
        "<message id='<'/>",
        "<message id='a'type='b'/>",
        "<message><body>a & b</body></message>",
        "<message><body>]]></body></message>",
        "<message><1body/></message>",
        "<message xmlns:p=''/>",
        "<message><!x></message>",
    ] {
        err_after_header(body, C::NotWellFormed);
    }
}

#[test]
fn rfc6120_11_6_invalid_utf8_is_not_well_formed() {
    for body in [
        &b"<message><body>\xff</body></message>"[..],
        b"<message><body>\xc3</body></message>",
        b"<message><body>\xc0\xaf</body></message>",
        b"<message><body>\xed\xa0\x80</body></message>",
        b"<message id='\xe2\x82'/>",
        b"<m\xffessage/>",
    ] {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(body);
        check_with(&input, no_hook, &[Exp::Open, Exp::Err(C::NotWellFormed)]);
    }
    check_with(
        b"<stream:stream to='\xff'/>",
        no_hook,
        &[Exp::Err(C::NotWellFormed)],
    );
}

#[test]
fn xml_2_2_illegal_characters_are_not_well_formed() {
    err_after_header("<message><body>\u{1}</body></message>", C::NotWellFormed);
    err_after_header("<message><body>\u{FFFF}</body></message>", C::NotWellFormed);
    err_after_header("<message id='\u{1b}'/>", C::NotWellFormed);
    check("<stream:stream to='\u{0}'/>", &[Exp::Err(C::NotWellFormed)]);
}

#[test]
fn rfc6120_13_9_4_too_deep_is_policy_violation() {
    let depth = Limits::default().max_depth;
    let ok = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    let got = run_all_splits(Limits::default(), stream(&ok).as_bytes(), no_hook);
    assert!(matches!(
        got.as_slice(),
        [Ok(Event::StreamOpen(_)), Ok(Event::Element(_))]
    ));
    let deep = format!("{}<b/>{}", "<a>".repeat(depth), "</a>".repeat(depth));
    err_after_header(&deep, C::PolicyViolation);
}

#[test]
fn rfc6120_13_9_4_oversized_stanza_is_policy_violation() {
    let limits = Limits {
        max_stanza_bytes: 64,
        max_depth: 8,
    };
    let fits = "<message><body>01234567890123456789012345678901</body></message>";
    assert_eq!(fits.len(), 64);
    let got = run_all_splits(limits, stream(fits).as_bytes(), no_hook);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(Result::is_ok));
    let too_big = "<message><body>012345678901234567890123456789012</body></message>";
    let got = run_all_splits(limits, stream(too_big).as_bytes(), no_hook);
    assert_eq!(
        got.last()
            .and_then(|r| r.as_ref().err())
            .map(|e| e.condition.clone()),
        Some(C::PolicyViolation)
    );
}

#[test]
fn rfc6120_13_9_4_oversized_header_is_policy_violation() {
    let big = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        "a".repeat(4100)
    );
    check(&big, &[Exp::Err(C::PolicyViolation)]);
    // White space before the header does not count towards the cap.
    check(&format!("{}{HEADER}", " ".repeat(5000)), &[Exp::Open]);
}
