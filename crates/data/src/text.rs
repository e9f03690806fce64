//! Text cleaning (`read_time_machine`) and tokenization (`tokenize`), book section 8.2.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Cleaning, DataError};

/// Token granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Every character of a line, spaces included (Unicode scalar values, never bytes).
    Char,
    /// Whitespace-separated words.
    Word,
}

impl std::str::FromStr for TokenKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "char" => Ok(Self::Char),
            "word" => Ok(Self::Word),
            _ => Err(DataError::invalid("token", s, "`char` or `word`")),
        }
    }
}

/// The end-of-line token word_language_model appends to every line.
pub const EOS: &str = "<eos>";

/// Cleans raw text into lines.
///
/// `Letters`: per line, `re.sub('[^A-Za-z]+', ' ', line).strip().lower()`.
/// `Unicode`: `text.replace('\n', ' ').replace('\r', ' ')` as one line.
/// `Lines`: the lines as they are (see `text_tokens` for how characters keep the breaks).
pub fn clean_lines(text: &str, cleaning: Cleaning) -> Vec<String> {
    match cleaning {
        Cleaning::Letters => text.lines().map(clean_letters).collect(),
        Cleaning::Unicode => vec![text.replace(['\n', '\r'], " ")],
        Cleaning::Lines => text.lines().map(String::from).collect(),
    }
}

/// Distinct tokens numbered in order of first appearance: a corpus of a million tokens
/// is held as a million `u32`s rather than a million `String`s (which took 30-40 bytes
/// each and set a training run's peak memory).
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<String, u32>,
    tokens: Vec<String>,
}

impl Interner {
    pub fn id(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.ids.get(token) {
            return id;
        }
        let id = u32::try_from(self.tokens.len()).expect("fewer than 2^32 distinct tokens");
        self.ids.insert(token.to_string(), id);
        self.tokens.push(token.to_string());
        id
    }

    pub fn token(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    /// Every distinct token, by id.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
}

/// A text as one token sequence: its cleaned lines tokenized and concatenated (the book),
/// as ids of `interner`. With `Lines` cleaning, characters include every line break
/// (char-rnn, nanoGPT); with `eos`, each line's words are followed by `<eos>`
/// (word_language_model).
pub fn text_token_ids(
    text: &str,
    cleaning: Cleaning,
    kind: TokenKind,
    eos: bool,
    interner: &mut Interner,
) -> Vec<u32> {
    fn char_ids(line: &str, interner: &mut Interner, out: &mut Vec<u32>) {
        let mut buf = [0u8; 4];
        out.extend(line.chars().map(|c| interner.id(c.encode_utf8(&mut buf))));
    }
    let mut out = Vec::new();
    if cleaning == Cleaning::Lines && kind == TokenKind::Char {
        char_ids(text, interner, &mut out);
        return out;
    }
    for line in clean_lines(text, cleaning) {
        match kind {
            TokenKind::Char => char_ids(&line, interner, &mut out),
            TokenKind::Word => out.extend(line.split_whitespace().map(|w| interner.id(w))),
        }
        if eos {
            out.push(interner.id(EOS));
        }
    }
    out
}

/// `text_token_ids` as strings.
pub fn text_tokens(text: &str, cleaning: Cleaning, kind: TokenKind, eos: bool) -> Vec<String> {
    let mut interner = Interner::default();
    let ids = text_token_ids(text, cleaning, kind, eos, &mut interner);
    ids.iter()
        .map(|&id| interner.token(id).to_string())
        .collect()
}

fn clean_letters(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_gap = false;
    for c in line.chars() {
        if c.is_ascii_alphabetic() {
            if in_gap && !out.is_empty() {
                out.push(' ');
            }
            in_gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            in_gap = true;
        }
    }
    out
}

/// Splits each line into tokens; an empty line gives no tokens.
pub fn tokenize(lines: &[String], kind: TokenKind) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|line| match kind {
            TokenKind::Char => line.chars().map(String::from).collect(),
            TokenKind::Word => line.split_whitespace().map(String::from).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_cleaning_matches_the_regex_strip_lower() {
        let lines = clean_lines(
            "The Time Machine, by H. G. Wells [1898]\n\n  --Hello!!  World-- \r\n",
            Cleaning::Letters,
        );
        assert_eq!(lines, ["the time machine by h g wells", "", "hello world"]);
    }

    #[test]
    fn unicode_cleaning_keeps_characters_and_joins_lines() {
        let lines = clean_lines("想要\r\n有直升机\n!", Cleaning::Unicode);
        assert_eq!(lines, ["想要  有直升机 !"]);
    }

    #[test]
    fn lines_keep_breaks_for_chars_and_end_words_with_eos() {
        let text = "First Citizen:\nBefore we proceed\n\n";
        let chars = text_tokens(text, Cleaning::Lines, TokenKind::Char, false);
        assert_eq!(chars.concat(), text);
        // word_language_model: `line.split() + ['<eos>']` for every line, empty ones too.
        let words = text_tokens(text, Cleaning::Lines, TokenKind::Word, true);
        assert_eq!(
            words,
            [
                "First", "Citizen:", "<eos>", "Before", "we", "proceed", "<eos>", "<eos>"
            ]
        );
        let book = text_tokens("a b\nc", Cleaning::Letters, TokenKind::Word, false);
        assert_eq!(book, ["a", "b", "c"]);
    }

    #[test]
    fn token_ids_number_tokens_by_first_appearance_across_texts() {
        let mut interner = Interner::default();
        let a = text_token_ids(
            "b a b\n",
            Cleaning::Lines,
            TokenKind::Word,
            true,
            &mut interner,
        );
        let b = text_token_ids("c b", Cleaning::Lines, TokenKind::Word, true, &mut interner);
        assert_eq!((a, b), (vec![0, 1, 0, 2], vec![3, 0, 2]));
        assert_eq!(interner.tokens(), ["b", "a", EOS, "c"]);
        let chars = text_token_ids(
            "想想x",
            Cleaning::Lines,
            TokenKind::Char,
            false,
            &mut interner,
        );
        assert_eq!(chars, [4, 4, 5]);
        assert_eq!(interner.token(4), "想");
    }

    #[test]
    fn tokenize_chars_and_words() {
        let lines = vec!["ab c".to_string(), String::new(), "分开 x".to_string()];
        assert_eq!(
            tokenize(&lines, TokenKind::Char),
            vec![vec!["a", "b", " ", "c"], vec![], vec!["分", "开", " ", "x"]]
        );
        assert_eq!(
            tokenize(&lines, TokenKind::Word),
            vec![vec!["ab", "c"], vec![], vec!["分开", "x"]]
        );
        assert!(
            "byte"
                .parse::<TokenKind>()
                .unwrap_err()
                .to_string()
                .contains("`char` or `word`")
        );
    }
}
