//! JAAS configurations as Kafka reads `sasl.jaas.config` (brokers' per
//! listener and mechanism, clients' in their properties).

use anyhow::{bail, Context};

/// A JAAS configuration of one login module, as Kafka reads
/// `sasl.jaas.config`: `<module class> <flag> [<option>=<value>]... ;`,
/// values quoted (with `\` escapes) or bare. Returns the module and its
/// options. Errors never quote a value (they may be passwords).
pub fn parse(text: &str) -> anyhow::Result<(String, Vec<(String, String)>)> {
    let mut tokens = JaasTokens {
        chars: text.chars().peekable(),
    };
    let module = tokens.word().context("no login module class")?;
    let flag = tokens
        .word()
        .context("no control flag after the login module")?;
    if !matches!(
        flag.as_str(),
        "required" | "requisite" | "sufficient" | "optional"
    ) {
        bail!("the control flag must be required, requisite, sufficient or optional");
    }
    let mut options = Vec::new();
    loop {
        tokens.skip_space();
        match tokens.chars.peek() {
            Some(';') => {
                tokens.chars.next();
                break;
            }
            None => bail!("the login module's options do not end with ';'"),
            Some(_) => {}
        }
        let name = tokens.word().context("an option without a name")?;
        tokens.skip_space();
        if tokens.chars.next() != Some('=') {
            bail!("option {name} has no '='");
        }
        tokens.skip_space();
        let value = if tokens.chars.peek() == Some(&'"') {
            tokens.chars.next();
            tokens
                .quoted()
                .with_context(|| format!("the value of {name}"))?
        } else {
            tokens
                .word()
                .with_context(|| format!("option {name} has no value"))?
        };
        options.push((name, value));
    }
    tokens.skip_space();
    if tokens.chars.next().is_some() {
        bail!("only one login module may be configured");
    }
    Ok((module, options))
}

struct JaasTokens<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl JaasTokens<'_> {
    fn skip_space(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    /// A bare token: up to white space, `=` or `;`.
    fn word(&mut self) -> Option<String> {
        self.skip_space();
        let mut word = String::new();
        while let Some(c) = self.chars.peek().copied() {
            if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                break;
            }
            word.push(c);
            self.chars.next();
        }
        (!word.is_empty()).then_some(word)
    }

    /// The rest of a quoted value, its closing quote consumed.
    fn quoted(&mut self) -> anyhow::Result<String> {
        let mut value = String::new();
        loop {
            match self.chars.next() {
                Some('"') => return Ok(value),
                Some('\\') => match self.chars.next() {
                    Some(escaped) => value.push(escaped),
                    None => bail!("ends inside an escape"),
                },
                Some(c) => value.push(c),
                None => bail!("has no closing quote"),
            }
        }
    }
}
